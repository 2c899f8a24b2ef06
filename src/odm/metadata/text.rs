//! ODM's translated texts (Question, Decode, ErrorMessage, Symbol): one text per language.

/// The `TranslatedText`s of one element, in document order: `(xml:lang, text)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Text {
    pub texts: Vec<(Option<String>, String)>,
}

impl Text {
    pub fn is_empty(&self) -> bool {
        self.best().is_none()
    }

    /// The English text (`xml:lang` `en` or `en-*`), else the first that is not blank; white
    /// space runs made one space, and trimmed.
    pub fn best(&self) -> Option<String> {
        let english = self.texts.iter().find(|(lang, text)| {
            lang.as_deref().is_some_and(is_english) && !text.trim().is_empty()
        });
        english
            .or_else(|| self.texts.iter().find(|(_, t)| !t.trim().is_empty()))
            .map(|(_, t)| tidy(t))
    }

    /// The languages of the texts that are not kept (all but the one [`Text::best`] takes), each
    /// once, `(none)` for a text without `xml:lang`.
    pub fn others(&self) -> Vec<String> {
        let kept = self
            .texts
            .iter()
            .position(|(lang, t)| lang.as_deref().is_some_and(is_english) && !t.trim().is_empty())
            .or_else(|| self.texts.iter().position(|(_, t)| !t.trim().is_empty()));
        let mut out: Vec<String> = Vec::new();
        for (i, (lang, t)) in self.texts.iter().enumerate() {
            if Some(i) == kept || t.trim().is_empty() {
                continue;
            }
            let lang = lang.clone().unwrap_or_else(|| "(none)".to_string());
            if !out.contains(&lang) {
                out.push(lang);
            }
        }
        out
    }
}

fn is_english(lang: &str) -> bool {
    let lang = lang.to_ascii_lowercase();
    lang == "en" || lang.starts_with("en-") || lang.starts_with("en_")
}

/// White space runs as one space, trimmed (OpenClinica writes its questions over several lines).
pub fn tidy(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(pairs: &[(Option<&str>, &str)]) -> Text {
        Text {
            texts: pairs
                .iter()
                .map(|(l, t)| (l.map(str::to_string), t.to_string()))
                .collect(),
        }
    }

    #[test]
    fn english_first_else_the_first_not_blank() {
        let t = text(&[
            (Some("fr"), "Sexe"),
            (Some("en-GB"), "  Sex\n  at birth "),
            (Some("ko"), ""),
        ]);
        assert_eq!(t.best().as_deref(), Some("Sex at birth"));
        assert_eq!(t.others(), vec!["fr".to_string()]);
        let t = text(&[(Some("ko"), " "), (None, "Körper"), (Some("fr"), "Corps")]);
        assert_eq!(t.best().as_deref(), Some("Körper"));
        assert_eq!(t.others(), vec!["fr".to_string()]);
        assert!(text(&[(Some("en"), "  ")]).is_empty());
        assert!(Text::default().best().is_none());
    }
}
