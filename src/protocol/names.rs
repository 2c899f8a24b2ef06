//! CEL names: how an expression refers to an item whose name is not a CEL identifier (ODM OIDs such
//! as `I.SYSBP`, `IT.VS.1` or `SE VISIT 1`), and the string literals an expression writes.

use std::collections::HashSet;

use cel::common::ast::{EntryExpr, Expr, LiteralValue};

/// Words CEL reserves: an item named so is read as `<word>_`.
pub const RESERVED_WORDS: [&str; 21] = [
    "as",
    "break",
    "const",
    "continue",
    "else",
    "false",
    "for",
    "function",
    "if",
    "import",
    "in",
    "let",
    "loop",
    "package",
    "namespace",
    "null",
    "return",
    "true",
    "var",
    "void",
    "while",
];

/// The CEL name of an item: every character outside `[A-Za-z0-9_]` becomes `_`, a leading digit
/// (or an empty name) gets a `_` before it, a reserved word a `_` after it. A name that is a CEL
/// identifier already is its own CEL name, so existing protocols read as before.
pub fn cel_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if RESERVED_WORDS.contains(&out.as_str()) {
        out.push('_');
    }
    out
}

/// The string literals of an expression, each once.
pub fn string_literals(program: &cel::Program) -> Vec<String> {
    fn walk(e: &cel::IdedExpr, out: &mut HashSet<String>) {
        match &e.expr {
            Expr::Literal(LiteralValue::String(s)) => {
                out.insert(s.inner().to_string());
            }
            Expr::Call(call) => {
                if let Some(t) = &call.target {
                    walk(t, out);
                }
                call.args.iter().for_each(|a| walk(a, out));
            }
            Expr::Comprehension(c) => {
                for part in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    walk(part, out);
                }
            }
            Expr::List(l) => l.elements.iter().for_each(|x| walk(x, out)),
            Expr::Map(m) => m.entries.iter().for_each(|x| entry(&x.expr, out)),
            Expr::Struct(s) => s.entries.iter().for_each(|x| entry(&x.expr, out)),
            Expr::Select(s) => walk(&s.operand, out),
            Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
        }
    }
    fn entry(e: &EntryExpr, out: &mut HashSet<String>) {
        match e {
            EntryExpr::StructField(f) => walk(&f.value, out),
            EntryExpr::MapEntry(m) => {
                walk(&m.key, out);
                walk(&m.value, out);
            }
        }
    }
    let mut out = HashSet::new();
    walk(program.expression(), &mut out);
    let mut v: Vec<String> = out.into_iter().collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cel_names_of_odm_oids() {
        for (name, cel) in [
            ("SYSBP", "SYSBP"),
            ("I.SYSBP", "I_SYSBP"),
            ("IT.VS.1", "IT_VS_1"),
            ("SE VISIT 1", "SE_VISIT_1"),
            ("1ST", "_1ST"),
            ("MU.10³/㎕", "MU_10___"),
            ("in", "in_"),
            ("", "_"),
        ] {
            assert_eq!(cel_name(name), cel, "{name}");
        }
    }

    #[test]
    fn every_cel_name_compiles_as_a_variable() {
        for name in ["I.SYSBP", "1ST", "in", "true", "Zoë", "a-b"] {
            let ident = cel_name(name);
            let p = cel::Program::compile(&format!("{ident} == 1")).unwrap();
            assert!(p.references().has_variable(&ident), "{name}");
        }
    }

    #[test]
    fn literals_are_found_anywhere() {
        let p = cel::Program::compile(
            "A >= '2024-03-10' || [B].exists(x, x == timestamp('2024-01-01T00:00:00Z')) || {'k': 'v'}['k'] == 'v'",
        )
        .unwrap();
        assert_eq!(
            string_literals(&p),
            vec!["2024-01-01T00:00:00Z", "2024-03-10", "k", "v"]
        );
    }
}
