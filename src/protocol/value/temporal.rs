//! Dates, times and date-times, complete or partial: strict ISO 8601 extended shapes, real calendar
//! dates, one canonical text each, and the span of instants a value stands for (what the partial
//! value rule of the checks needs).
//!
//! Shapes (every part fixed width, ASCII digits only):
//! - date `YYYY-MM-DD`; partial date `YYYY`, `YYYY-MM` or `YYYY-MM-DD`;
//! - time `hh:mm[:ss[.f]]`; partial time `hh[:mm[:ss[.f]]]` (1 to 9 fraction digits);
//! - date-time `YYYY-MM-DDThh:mm[:ss[.f]]`; partial date-time a partial date, then (only after a
//!   day) `T` and a partial time;
//! - an optional offset after any time: `Z` or `+hh:mm` / `-hh:mm` (`-00:00`, "unknown offset" in
//!   RFC 3339, is refused).
//!
//! Hours 00-23, minutes and seconds 00-59 (no leap second, no `24:00`).

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime};

/// A calendar date, possibly truncated on the right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateParts {
    pub year: i32,
    pub month: Option<u32>,
    pub day: Option<u32>,
}

/// A time of day, possibly truncated on the right, with its offset from UTC if one was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeParts {
    pub hour: u32,
    pub minute: Option<u32>,
    pub second: Option<u32>,
    /// The fraction of a second as written (1 to 9 digits).
    pub fraction: Option<String>,
    /// Seconds east of UTC.
    pub offset: Option<i32>,
}

/// Reads `n` ASCII digits at the start of `s`.
fn digits(s: &[u8], n: usize) -> Option<u32> {
    if s.len() < n || !s[..n].iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        s[..n]
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0')),
    )
}

/// Strict `YYYY[-MM[-DD]]`; the whole text must be used.
pub fn parse_date(s: &str) -> Option<DateParts> {
    let b = s.as_bytes();
    let year = digits(b, 4)? as i32;
    let (month, day) = match b.len() {
        4 => (None, None),
        7 if b[4] == b'-' => (Some(digits(&b[5..], 2)?), None),
        10 if b[4] == b'-' && b[7] == b'-' => {
            (Some(digits(&b[5..], 2)?), Some(digits(&b[8..], 2)?))
        }
        _ => return None,
    };
    if let Some(m) = month
        && !(1..=12).contains(&m)
    {
        return None;
    }
    if let (Some(m), Some(d)) = (month, day) {
        NaiveDate::from_ymd_opt(year, m, d)?;
    }
    Some(DateParts { year, month, day })
}

/// Strict `hh[:mm[:ss[.f]]][offset]`; the whole text must be used.
pub fn parse_time(s: &str) -> Option<TimeParts> {
    let b = s.as_bytes();
    let hour = digits(b, 2).filter(|h| *h < 24)?;
    let mut at = 2;
    let two = |at: &mut usize, max: u32| -> Option<Option<u32>> {
        if b.get(*at) != Some(&b':') {
            return Some(None);
        }
        let v = digits(&b[*at + 1..], 2).filter(|v| *v <= max)?;
        *at += 3;
        Some(Some(v))
    };
    let minute = two(&mut at, 59)?;
    let second = if minute.is_some() {
        two(&mut at, 59)?
    } else {
        None
    };
    let mut fraction = None;
    if second.is_some() && b.get(at) == Some(&b'.') {
        let n = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if !(1..=9).contains(&n) {
            return None;
        }
        fraction = Some(s[at + 1..at + 1 + n].to_string());
        at += 1 + n;
    }
    let offset = parse_offset(&b[at..])?;
    Some(TimeParts {
        hour,
        minute,
        second,
        fraction,
        offset,
    })
}

/// The rest of a time: nothing, `Z` or `±hh:mm`. `Some(None)`: no offset; `None`: not an offset.
fn parse_offset(b: &[u8]) -> Option<Option<i32>> {
    match b {
        [] => Some(None),
        [b'Z'] => Some(Some(0)),
        [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
            let h = digits(rest, 2).filter(|h| *h < 24)? as i32;
            let m = digits(&rest[3..], 2).filter(|m| *m < 60)? as i32;
            let secs = h * 3600 + m * 60;
            match (sign, secs) {
                (b'-', 0) => None,
                (b'-', _) => Some(Some(-secs)),
                _ => Some(Some(secs)),
            }
        }
        _ => None,
    }
}

/// Strict `date[Ttime]`; `None` for the time part when there is none.
pub fn parse_datetime(s: &str) -> Option<(DateParts, Option<TimeParts>)> {
    match s.split_once('T') {
        None => Some((parse_date(s)?, None)),
        Some((d, t)) => {
            let date = parse_date(d)?;
            date.day?;
            Some((date, Some(parse_time(t)?)))
        }
    }
}

impl DateParts {
    /// As written: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`.
    pub fn text(&self) -> String {
        match (self.month, self.day) {
            (Some(m), Some(d)) => format!("{:04}-{m:02}-{d:02}", self.year),
            (Some(m), None) => format!("{:04}-{m:02}", self.year),
            _ => format!("{:04}", self.year),
        }
    }

    pub fn is_complete(&self) -> bool {
        self.day.is_some()
    }

    /// The first and the last day it can stand for.
    pub fn days(&self) -> (NaiveDate, NaiveDate) {
        let first_of = |m: u32| NaiveDate::from_ymd_opt(self.year, m, 1);
        let fallback = NaiveDate::MIN;
        match (self.month, self.day) {
            (Some(m), Some(d)) => {
                let day = NaiveDate::from_ymd_opt(self.year, m, d).unwrap_or(fallback);
                (day, day)
            }
            (Some(m), None) => {
                let first = first_of(m).unwrap_or(fallback);
                let next = if m == 12 {
                    NaiveDate::from_ymd_opt(self.year + 1, 1, 1)
                } else {
                    first_of(m + 1)
                };
                (first, next.and_then(|n| n.pred_opt()).unwrap_or(first))
            }
            _ => (
                first_of(1).unwrap_or(fallback),
                NaiveDate::from_ymd_opt(self.year, 12, 31).unwrap_or(fallback),
            ),
        }
    }
}

/// `Z`, or `+hh:mm` / `-hh:mm`.
fn offset_text(secs: i32) -> String {
    if secs == 0 {
        return "Z".to_string();
    }
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.abs();
    format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
}

impl TimeParts {
    /// Complete to the second (a fraction is optional).
    pub fn is_complete(&self) -> bool {
        self.second.is_some()
    }

    /// The text of a complete time (`hh:mm:ss`, then the fraction without its trailing zeros, then
    /// the offset): one text for one time.
    pub fn canonical(&self) -> String {
        let mut out = self.clock_text();
        if let Some(o) = self.offset {
            out.push_str(&offset_text(o));
        }
        out
    }

    /// The clock time of a complete time, without its offset: what CEL compares.
    pub fn clock_text(&self) -> String {
        let mut out = format!(
            "{:02}:{:02}:{:02}",
            self.hour,
            self.minute.unwrap_or(0),
            self.second.unwrap_or(0)
        );
        if let Some(f) = &self.fraction {
            let f = f.trim_end_matches('0');
            if !f.is_empty() {
                out.push('.');
                out.push_str(f);
            }
        }
        out
    }

    /// The text of a partial time: its parts as written (the fraction's digits are its precision),
    /// the offset spelt `Z` when it is zero.
    pub fn partial_text(&self) -> String {
        let mut out = format!("{:02}", self.hour);
        if let Some(m) = self.minute {
            out.push_str(&format!(":{m:02}"));
        }
        if let Some(s) = self.second {
            out.push_str(&format!(":{s:02}"));
        }
        if let Some(f) = &self.fraction {
            out.push('.');
            out.push_str(f);
        }
        if let Some(o) = self.offset {
            out.push_str(&offset_text(o));
        }
        out
    }

    /// The first and the last clock time it can stand for (nanosecond resolution).
    pub fn clock_span(&self) -> (NaiveTime, NaiveTime) {
        let nanos = |f: &str, fill: u8| -> u32 {
            let mut padded = f.as_bytes().to_vec();
            padded.resize(9, fill);
            padded
                .iter()
                .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
        };
        let at = |m: u32, s: u32, n: u32| {
            NaiveTime::from_hms_nano_opt(self.hour, m, s, n).unwrap_or(NaiveTime::MIN)
        };
        match (self.minute, self.second, &self.fraction) {
            (None, _, _) => (at(0, 0, 0), at(59, 59, 999_999_999)),
            (Some(m), None, _) => (at(m, 0, 0), at(m, 59, 999_999_999)),
            (Some(m), Some(s), None) => (at(m, s, 0), at(m, s, 999_999_999)),
            (Some(m), Some(s), Some(f)) => (at(m, s, nanos(f, b'0')), at(m, s, nanos(f, b'9'))),
        }
    }
}

/// The clock text CEL compares for a clock time: `hh:mm:ss`, then a fraction without trailing
/// zeros.
pub fn clock_text(t: NaiveTime) -> String {
    let base = t.format("%H:%M:%S").to_string();
    let nanos = chrono::Timelike::nanosecond(&t);
    if nanos == 0 {
        return base;
    }
    let f = format!("{nanos:09}");
    format!("{base}.{}", f.trim_end_matches('0'))
}

/// The first and last instant (UTC; a value without an offset is taken as UTC) a date or a partial
/// date-time can stand for: a date stands for its whole day, `2024-03-15T10` for the hour.
pub fn instant_span(date: &DateParts, time: Option<&TimeParts>) -> (NaiveDateTime, NaiveDateTime) {
    let (first_day, last_day) = date.days();
    let Some(t) = time else {
        return (
            first_day.and_time(NaiveTime::MIN),
            last_day.and_time(
                NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999).unwrap_or(NaiveTime::MIN),
            ),
        );
    };
    let (a, b) = t.clock_span();
    let shift = Duration::seconds(i64::from(t.offset.unwrap_or(0)));
    let utc = |d: NaiveDate, c: NaiveTime| {
        let local = d.and_time(c);
        local.checked_sub_signed(shift).unwrap_or(local)
    };
    (utc(first_day, a), utc(last_day, b))
}
