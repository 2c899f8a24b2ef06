//! Integers and decimals: strict text forms (what ODM files carry), one canonical JSON number each,
//! and its text as PostgreSQL prints the stored `jsonb` number, so that the text computed here and
//! the text a SQL view shows are the same.

use serde_json::{Number, Value};

/// `[+-]?[0-9]+` as a JSON integer (i64, or u64 above i64::MAX); `None` if not one or out of range.
pub fn parse_integer(s: &str) -> Option<Number> {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = s.strip_prefix('+').unwrap_or(s);
    if let Ok(i) = digits.parse::<i64>() {
        return Some(Number::from(i));
    }
    if s.starts_with('-') {
        return None;
    }
    unsigned.parse::<u64>().ok().map(Number::from)
}

/// `[+-]?(digits[.digits?] | .digits)([eE][+-]?digits)?`, finite; `None` otherwise (no `NaN`, no
/// `INF`, no hexadecimal).
pub fn parse_decimal(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    if let Some(e) = exponent {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        if e.is_empty() || !all_digits(e) {
            return None;
        }
    }
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Below 2^63 in magnitude an integral double is exactly an i64; from 0 to below 2^64 a u64.
const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;
const U64_BOUND: f64 = 18_446_744_073_709_551_616.0;

/// The canonical JSON of a decimal: an integral value as a JSON integer (`37.0` is `37`) when one
/// holds it, any other as the shortest double that reads back the same.
pub fn decimal_json(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < I64_BOUND {
        return Value::Number(Number::from(x as i64));
    }
    if x.fract() == 0.0 && (0.0..U64_BOUND).contains(&x) {
        return Value::Number(Number::from(x as u64));
    }
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// A decimal's text to its canonical JSON: an integer text stays an integer (no digit lost),
/// any other through a double.
pub fn decimal_text(s: &str) -> Option<Value> {
    match parse_integer(s) {
        Some(n) => Some(Value::Number(n)),
        None => parse_decimal(s).map(decimal_json),
    }
}

/// The canonical JSON of a decimal given as a JSON number: an integer stays as it is (no detour
/// through a double, so no digit is lost), a double as [`decimal_json`].
pub fn decimal_number(n: &Number) -> Option<Value> {
    if n.is_i64() || n.is_u64() {
        return Some(Value::Number(n.clone()));
    }
    n.as_f64().filter(|x| x.is_finite()).map(decimal_json)
}

/// A JSON number's text in positional notation, as PostgreSQL prints a `jsonb` number: serde_json
/// writes `1e16` or `1.5e-7`, PostgreSQL `10000000000000000` and `0.00000015`.
pub fn number_text(n: &Number) -> String {
    let written = n.to_string();
    match written.find(['e', 'E']) {
        None => written,
        Some(at) => expand(&written[..at], &written[at + 1..]).unwrap_or(written),
    }
}

/// `mantissa` x 10^`exponent` written out, with as many fraction digits as it needs and no more
/// (which is the display scale PostgreSQL's numeric gives such an input).
fn expand(mantissa: &str, exponent: &str) -> Option<String> {
    let exp: i64 = exponent
        .strip_prefix('+')
        .unwrap_or(exponent)
        .parse()
        .ok()?;
    let (negative, m) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let (int, frac) = m.split_once('.').unwrap_or((m, ""));
    let digits = format!("{int}{frac}");
    // Position of the decimal point within `digits`, after shifting.
    let point = int.len() as i64 + exp;
    if !(-400..=400).contains(&point) {
        return None;
    }
    let (whole, fraction) = if point <= 0 {
        (
            "0".to_string(),
            format!("{}{digits}", "0".repeat((-point) as usize)),
        )
    } else if point as usize >= digits.len() {
        (
            format!("{digits}{}", "0".repeat(point as usize - digits.len())),
            String::new(),
        )
    } else {
        (
            digits[..point as usize].to_string(),
            digits[point as usize..].to_string(),
        )
    };
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let fraction = fraction.trim_end_matches('0');
    let sign = if negative { "-" } else { "" };
    Some(if fraction.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    })
}

/// Significant digits of a number's canonical text: (all of them, those after the point). Leading
/// zeros of the whole part and trailing zeros of the fraction do not count; zero has one digit.
pub fn digit_counts(text: &str) -> (usize, usize) {
    let t = text.trim_start_matches('-');
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    ((int.len() + frac.len()).max(1), frac.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_from_text() {
        let n = |s: &str| parse_integer(s).map(|n| n.to_string());
        assert_eq!(n("007").as_deref(), Some("7"));
        assert_eq!(n("+5").as_deref(), Some("5"));
        assert_eq!(n("-0").as_deref(), Some("0"));
        assert_eq!(n("-12").as_deref(), Some("-12"));
        assert_eq!(
            n("18446744073709551615").as_deref(),
            Some("18446744073709551615")
        );
        for bad in [
            "",
            "+",
            "-",
            "1.0",
            "1e3",
            " 1",
            "1 ",
            "١",
            "18446744073709551616",
            "-9223372036854775809",
        ] {
            assert_eq!(n(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn decimals_from_text() {
        for (s, x) in [
            ("36.80", 36.8),
            ("-.5", -0.5),
            ("5.", 5.0),
            ("1.5E3", 1500.0),
            ("+2e-2", 0.02),
        ] {
            assert_eq!(parse_decimal(s), Some(x), "{s}");
        }
        for bad in [
            "", ".", "NaN", "inf", "INF", "1e", "1e+", "0x10", "1,5", " 1", "1e999", "--1", "1.2.3",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn canonical_decimals_and_their_text() {
        let text = |x: f64| match decimal_json(x) {
            Value::Number(n) => number_text(&n),
            other => panic!("{other}"),
        };
        assert_eq!(text(37.0), "37");
        assert_eq!(text(-0.0), "0");
        assert_eq!(text(36.8), "36.8");
        assert_eq!(text(1e16), "10000000000000000");
        assert_eq!(text(1e20), "100000000000000000000");
        assert_eq!(text(1.5e-7), "0.00000015");
        assert_eq!(text(-2.5e-10), "-0.00000000025");
        assert_eq!(text(0.1), "0.1");
    }

    #[test]
    fn digits_are_significant_digits() {
        assert_eq!(digit_counts("36.8"), (3, 1));
        assert_eq!(digit_counts("0.25"), (2, 2));
        assert_eq!(digit_counts("-120"), (3, 0));
        assert_eq!(digit_counts("0"), (1, 0));
        assert_eq!(digit_counts("100.50"), (4, 1));
    }
}
