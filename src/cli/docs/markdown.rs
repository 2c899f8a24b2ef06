//! Just enough Markdown for the documentation test to read the project's own documents: fenced code
//! blocks, headings and their GitHub anchors, sections, table rows, inline code spans and links.
//! The documents are written by us, in a plain subset (one code span never spans two lines, a
//! table cell holds no `|`), so this is a reader of that subset, not of Markdown at large.

use std::collections::HashSet;

/// One line of a document, with the language of the fenced code block it is in: `None` outside
/// any block, `Some("")` in a block with no language. Fence lines themselves are left out.
#[derive(Clone, Copy, Debug)]
pub struct Line<'a> {
    /// 1-based, as an editor shows it.
    pub number: usize,
    pub text: &'a str,
    pub fence: Option<&'a str>,
}

pub fn lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut fence: Option<(&str, &str)> = None; // (the fence's marker, its language)
    for (i, text) in text.lines().enumerate() {
        let trimmed = text.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => {
                fence = Some((m, trimmed[m.len()..].trim()));
                continue;
            }
            (Some((open, _)), Some(m)) if m == open && trimmed[m.len()..].trim().is_empty() => {
                fence = None;
                continue;
            }
            _ => {}
        }
        out.push(Line {
            number: i + 1,
            text,
            fence: fence.map(|(_, language)| language),
        });
    }
    out
}

/// A heading outside code blocks: its level (the number of `#`) and its text.
pub fn heading<'a>(line: &Line<'a>) -> Option<(usize, &'a str)> {
    if line.fence.is_some() {
        return None;
    }
    let level = line.text.chars().take_while(|c| *c == '#').count();
    let rest = line.text.get(level..)?;
    (level > 0 && rest.starts_with(' ')).then(|| (level, rest.trim()))
}

/// The anchor GitHub gives a heading: lower case, every character but letters, digits, `-`, `_`
/// and spaces dropped, spaces made `-`.
pub fn slug(title: &str) -> String {
    title
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// Every anchor of a document; a repeated heading gets `-1`, `-2`, ... as on GitHub.
pub fn anchors(lines: &[Line<'_>]) -> HashSet<String> {
    let mut out = HashSet::new();
    for line in lines {
        if let Some((_, title)) = heading(line) {
            let base = slug(title);
            let mut anchor = base.clone();
            let mut n = 0;
            while out.contains(&anchor) {
                n += 1;
                anchor = format!("{base}-{n}");
            }
            out.insert(anchor);
        }
    }
    out
}

/// The lines under the heading whose text is `title`, up to the next heading of its level or
/// higher; None if there is no such heading.
pub fn section<'a>(lines: &[Line<'a>], title: &str) -> Option<Vec<Line<'a>>> {
    let start = lines
        .iter()
        .position(|l| heading(l).is_some_and(|(_, t)| t == title))?;
    let (level, _) = heading(&lines[start])?;
    Some(
        lines[start + 1..]
            .iter()
            .take_while(|l| heading(l).is_none_or(|(lv, _)| lv > level))
            .copied()
            .collect(),
    )
}

/// The body rows of the tables in `lines` (a row followed by a `|---|` line is a header and left
/// out), each as its line number and its cells, trimmed.
pub fn rows(lines: &[Line<'_>]) -> Vec<(usize, Vec<String>)> {
    let is_row = |l: &Line<'_>| l.fence.is_none() && l.text.trim_start().starts_with('|');
    let is_rule =
        |l: &Line<'_>| is_row(l) && l.text.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '));
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !is_row(line) || is_rule(line) || lines.get(i + 1).is_some_and(is_rule) {
            continue;
        }
        let inner = line
            .text
            .trim()
            .trim_start_matches('|')
            .trim_end_matches('|');
        out.push((
            line.number,
            inner.split('|').map(|c| c.trim().to_string()).collect(),
        ));
    }
    out
}

/// The inline code spans of a line of prose (single or double backticks).
pub fn code_spans(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('`') {
        let ticks = rest[at..].chars().take_while(|c| *c == '`').count();
        let delimiter = &rest[at..at + ticks];
        let body = &rest[at + ticks..];
        let Some(end) = body.find(delimiter) else {
            break;
        };
        out.push(body[..end].trim());
        rest = &body[end + ticks..];
    }
    out
}

/// The one code span a table cell is, if it is exactly one.
pub fn cell_code(cell: &str) -> Option<&str> {
    let spans = code_spans(cell);
    match spans.as_slice() {
        [one] if cell.starts_with('`') && cell.ends_with('`') => Some(one),
        _ => None,
    }
}

/// The targets of the inline links `[text](target)` of a line of prose, outside code spans.
pub fn links(text: &str) -> Vec<String> {
    // The prose with every code span taken out, backticks and all.
    let mut prose = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('`') {
        prose.push_str(&rest[..at]);
        let ticks = rest[at..].chars().take_while(|c| *c == '`').count();
        let body = &rest[at + ticks..];
        match body.find(&rest[at..at + ticks]) {
            Some(end) => rest = &body[end + ticks..],
            None => {
                rest = body;
                break;
            }
        }
    }
    prose.push_str(rest);
    let mut out = Vec::new();
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        let target = &rest[at + 2..];
        let end = target.find(')').unwrap_or(target.len());
        out.push(target[..end].trim().to_string());
        rest = &target[end..];
    }
    out
}

/// The pieces of code of a document that may hold a command line: the code spans of its prose, the
/// lines of its shell blocks, and the lines of other blocks that start with a `$ ` prompt.
pub fn code<'a>(lines: &[Line<'a>]) -> Vec<(usize, &'a str)> {
    let mut out = Vec::new();
    for line in lines {
        match line.fence {
            None => out.extend(code_spans(line.text).into_iter().map(|s| (line.number, s))),
            Some("sh" | "bash" | "shell" | "console") => out.push((line.number, line.text)),
            Some(_) => {
                if let Some(command) = line.text.trim_start().strip_prefix("$ ") {
                    out.push((line.number, command));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_reads_the_subset_the_documents_use() {
        let text = "# Top\n\n## A `b.c` d\n| key | x |\n|---|---|\n| `k` | `v` |\n```sh\n## not a heading\n```\n## A `b.c` d\n[x](y.md#z) `[n](o)`\n";
        let ls = lines(text);
        assert!(ls.iter().all(|l| !l.text.starts_with("```")));
        let section = section(&ls, "A `b.c` d").unwrap();
        assert_eq!(rows(&section), vec![(6, vec!["`k`".into(), "`v`".into()])]);
        assert_eq!(cell_code("`k`"), Some("k"));
        assert_eq!(cell_code("`k` and `l`"), None);
        let anchors = anchors(&ls);
        for a in ["top", "a-bc-d", "a-bc-d-1"] {
            assert!(anchors.contains(a), "{a}: {anchors:?}");
        }
        assert!(!anchors.contains("not-a-heading"));
        assert_eq!(links(ls.last().unwrap().text), vec!["y.md#z".to_string()]);
        assert_eq!(links("[`a.md`](a.md) `[b](c)` [d](#e)"), vec!["a.md", "#e"]);
        assert_eq!(code_spans("a ``x ` y`` b `z`"), vec!["x ` y", "z"]);
        let code = code(&ls);
        assert!(code.iter().any(|(_, c)| *c == "## not a heading"));
    }
}
