//! The reader against a conformant one (roxmltree), and each refusal beside its near miss.

use proptest::prelude::*;

use super::*;

/// What a reader made of a document, owned, with adjacent character data merged (as a tree
/// reader keeps it), so two readers can be compared.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tok {
    Start(String, String, Vec<(String, String, String)>),
    End,
    Text(String),
}

pub(super) fn odm(body: &str) -> String {
    format!(r#"<ODM xmlns="{ODM13_NS}" ODMVersion="1.3.2">{body}</ODM>"#)
}

pub(super) fn read_with(doc: &[u8], limits: Limits) -> Result<Vec<Tok>, FileError> {
    let mut reader = XmlReader::new(doc, limits);
    let mut out = Vec::new();
    loop {
        match reader.next_token()? {
            Token::Start(s) => out.push(Tok::Start(
                s.ns.to_string(),
                s.local.to_string(),
                s.attrs
                    .iter()
                    .map(|a| (a.ns().into(), a.local().into(), a.value().into()))
                    .collect(),
            )),
            Token::End { .. } => out.push(Tok::End),
            Token::Text(t) => match out.last_mut() {
                Some(Tok::Text(before)) => before.push_str(t),
                _ => out.push(Tok::Text(t.to_string())),
            },
            Token::Eof => return Ok(out),
        }
    }
}

pub(super) fn read(doc: &str) -> Result<Vec<Tok>, FileError> {
    read_with(doc.as_bytes(), Limits::default())
}

/// The refusal of a document (panics if it is read).
pub(super) fn refusal(doc: &[u8]) -> FileError {
    read_with(doc, Limits::default()).expect_err("refused")
}

/// What roxmltree makes of the same document.
fn oracle(doc: &str) -> Vec<Tok> {
    fn walk(node: roxmltree::Node, out: &mut Vec<Tok>) {
        if node.is_element() {
            let name = node.tag_name();
            out.push(Tok::Start(
                name.namespace().unwrap_or("").to_string(),
                name.name().to_string(),
                node.attributes()
                    .map(|a| {
                        let ns = a.namespace().unwrap_or("").to_string();
                        (ns, a.name().to_string(), a.value().to_string())
                    })
                    .collect(),
            ));
            for child in node.children() {
                walk(child, out);
            }
            out.push(Tok::End);
        } else if let Some(text) = node.text().filter(|_| node.is_text()) {
            match out.last_mut() {
                Some(Tok::Text(before)) => before.push_str(text),
                _ => out.push(Tok::Text(text.to_string())),
            }
        }
    }
    let parsed = roxmltree::Document::parse(doc).expect("roxmltree reads it");
    let mut out = Vec::new();
    walk(parsed.root_element(), &mut out);
    out
}

#[test]
fn reads_what_a_conformant_reader_reads() {
    let docs = [
        odm(
            r#"<ClinicalData StudyOID="S.1" MetaDataVersionOID="v1"><SubjectData SubjectKey="1"/></ClinicalData>"#,
        ),
        // A prefixed root, a vendor namespace, xml:lang, comments and a PI between text.
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<odm:ODM xmlns:odm=\"{ODM13_NS}\" xmlns:v=\"urn:vendor\" ODMVersion=\"1.3\">\n  <odm:Study v:flag=\"y\" OID=\"ST\"><odm:TranslatedText xml:lang=\"en\">a<!-- c -->b<?pi x?>c</odm:TranslatedText></odm:Study>\n</odm:ODM>\n"
        ),
        // References, CDATA, line ends, non-ASCII, spaces in values.
        odm(
            "<X A=\"&lt;&amp;&gt;&quot;&apos; &#233;&#x20AC;\">x &amp; y<![CDATA[<&>]]>\r\nz\rw &#10;&#13;</X>",
        ),
        odm("<X Value=\"line one\nline two\ttab\r\nend&#10;kept&#9;tab\"/>"),
        odm("<v:X xmlns:v=\"urn:v\" xmlns=\"urn:other\"><Y/></v:X><X xmlns=\"\"/>"),
    ];
    for doc in docs {
        assert_eq!(read(&doc).unwrap(), oracle(&doc), "{doc}");
    }
}

#[test]
fn attribute_values_are_normalised_as_xml_requires() {
    let doc = odm("<X Value=\"a\nb\tc\r\nd&#10;e&#9;f&#13;g\"/>");
    let toks = read(&doc).unwrap();
    let Tok::Start(_, _, attrs) = &toks[1] else {
        panic!("{toks:?}")
    };
    assert_eq!(attrs[0].2, "a b c d\ne\tf\rg");
    assert_eq!(toks, oracle(&doc));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Any value made of characters that need care reads the same here as in roxmltree, as an
    /// attribute and as text.
    #[test]
    fn escaped_values_read_like_roxmltree(parts in proptest::collection::vec(prop_oneof![
        Just("&lt;"), Just("&amp;"), Just("&gt;"), Just("&quot;"), Just("&apos;"), Just("&#10;"),
        Just("&#9;"), Just("&#13;"), Just("&#xE9;"), Just("\n"), Just("\t"), Just("\r\n"),
        // A lone CR before a reference: roxmltree keeps it, XML (and expat) make it a newline;
        // see `a_lone_carriage_return_is_a_newline`.
        Just("\rx"), Just(" "), Just("é"), Just("€"), Just("𝄞"), Just("a"), Just("Z9"),
        Just("<![CDATA[<&]]>"),
    ], 0..12)) {
        let raw: String = parts.concat();
        let attr = raw.replace("<![CDATA[<&]]>", "x");
        let doc = odm(&format!("<X V=\"{attr}\">{raw}</X>"));
        prop_assert_eq!(read(&doc).unwrap(), oracle(&doc));
    }
}

/// XML's line-end normalisation applies to the whole input, so a CR alone is a newline, before a
/// reference too (expat reads `<X>\r&lt;</X>` as "\n<"; roxmltree 0.21 keeps the CR there).
#[test]
fn a_lone_carriage_return_is_a_newline() {
    let toks = read(&odm("<X V=\"\r&lt;\">\r&lt;\rb\r\nc</X>")).unwrap();
    assert_eq!(toks[2], Tok::Text("\n<\nb\nc".into()));
    assert!(matches!(&toks[1], Tok::Start(_, _, a) if a[0].2 == " <"));
}

#[test]
fn the_root_must_be_odm_1_3() {
    let ns = ODM13_NS;
    for (doc, kind) in [
        (format!("<Study xmlns=\"{ns}\"/>"), Refusal::RootNotOdm),
        (
            "<ODM ODMVersion=\"1.3.2\"/>".to_string(),
            Refusal::RootNamespace,
        ),
        (
            "<ODM xmlns=\"http://www.cdisc.org/ns/odm/v1.2\"/>".to_string(),
            Refusal::RootNamespace,
        ),
        (
            format!("<ODM xmlns=\"{ODM20_NS}\" ODMVersion=\"2.0\"/>"),
            Refusal::Odm2,
        ),
        (format!("<o:ODM xmlns:o=\"{ODM20_NS}\"/>"), Refusal::Odm2),
        (
            format!("<ODM xmlns=\"{ns}\" ODMVersion=\"1.2\"/>"),
            Refusal::OdmVersion,
        ),
        (
            format!("<ODM xmlns=\"{ns}\" ODMVersion=\"2.0\"/>"),
            Refusal::OdmVersion,
        ),
        (
            format!("<ODM xmlns=\"{ns}\" ODMVersion=\"1.3.2b\"/>"),
            Refusal::OdmVersion,
        ),
        (
            format!("<ODM xmlns=\"{ns}\" ODMVersion=\"1.30\"/>"),
            Refusal::OdmVersion,
        ),
    ] {
        let e = refusal(doc.as_bytes());
        assert_eq!(e.kind, kind, "{doc}");
        assert_eq!(e.at, Position { line: 1, column: 1 });
    }
    // Near misses: any prefix, no ODMVersion, 1.3, 1.3.1, 1.3.2.
    for doc in [
        format!("<o:ODM xmlns:o=\"{ns}\" ODMVersion=\"1.3.2\"><o:Study/></o:ODM>"),
        format!("<ODM xmlns=\"{ns}\"/>"),
        format!("<ODM xmlns=\"{ns}\" ODMVersion=\"1.3\"/>"),
        format!("<ODM xmlns=\"{ns}\" ODMVersion=\"1.3.1\"/>"),
        odm(""),
    ] {
        read(&doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
    }
}

#[test]
fn iso_8859_1_is_transcoded_when_declared_in_any_case() {
    for name in ["ISO-8859-1", "iso-8859-1", "Iso-8859-1", "latin1"] {
        let mut doc = format!("<?xml version=\"1.0\" encoding=\"{name}\"?>\n").into_bytes();
        doc.extend_from_slice(odm("<X V=\"Zo\u{1}\">Gen\u{2}ve</X>").as_bytes());
        // Put single Latin-1 bytes where the markers are.
        let doc: Vec<u8> = doc
            .iter()
            .map(|&b| match b {
                1 => 0xEB,
                2 => 0xE8,
                b => b,
            })
            .collect();
        let toks = read_with(&doc, Limits::default()).unwrap();
        assert!(
            matches!(&toks[1], Tok::Start(_, _, a) if a[0].2 == "Zoë"),
            "{toks:?}"
        );
        assert_eq!(toks[2], Tok::Text("Genève".into()));
    }
    // The same bytes undeclared are not UTF-8.
    let mut doc = odm("<X>Gen\u{2}ve</X>").into_bytes();
    for b in doc.iter_mut() {
        if *b == 2 {
            *b = 0xE8;
        }
    }
    let e = refusal(&doc);
    assert_eq!(e.kind, Refusal::Encoding(EncodingProblem::BadUtf8));
    assert_eq!(e.at.line, 1);
}

#[test]
fn other_encodings_are_refused() {
    let utf16 = |bom: &[u8], text: &str| -> Vec<u8> {
        let mut out = bom.to_vec();
        for unit in text.encode_utf16() {
            out.extend_from_slice(&unit.to_le_bytes());
        }
        out
    };
    let doc = odm("");
    assert_eq!(
        refusal(&utf16(&[0xFF, 0xFE], &doc)).kind,
        Refusal::Encoding(EncodingProblem::Utf16Bom)
    );
    assert_eq!(
        refusal(&utf16(&[], &doc)).kind,
        Refusal::Encoding(EncodingProblem::WideWithoutBom)
    );
    for name in ["UTF-16", "windows-1252", "ISO-8859-15", "EBCDIC"] {
        let doc = format!("<?xml version=\"1.0\" encoding=\"{name}\"?>{}", odm(""));
        let e = refusal(doc.as_bytes());
        assert_eq!(
            e.kind,
            Refusal::Encoding(EncodingProblem::Declared),
            "{name}"
        );
    }
    // Near misses: UTF-8 named in any case, or not named; a UTF-8 byte-order mark.
    for decl in ["encoding=\"utf-8\"", "encoding='UTF-8'", ""] {
        let doc = format!("<?xml version=\"1.0\" {decl}?>{}", odm("<X>é</X>"));
        read(&doc).unwrap();
    }
    let mut doc = vec![0xEF, 0xBB, 0xBF];
    doc.extend_from_slice(odm("<X>é</X>").as_bytes());
    read_with(&doc, Limits::default()).unwrap();
}

/// Every OpenClinica 3 export declares US-ASCII: the subset of UTF-8 it is, and no more.
#[test]
fn us_ascii_is_read_as_ascii_and_a_byte_above_it_refused() {
    for name in ["US-ASCII", "us-ascii", "ASCII"] {
        let doc = format!(
            "<?xml version=\"1.0\" encoding=\"{name}\"?>{}",
            odm("<X V=\"a\">b&#233;</X>")
        );
        let toks = read(&doc).unwrap();
        assert_eq!(toks[2], Tok::Text("bé".into()));
    }
    let doc = format!(
        "<?xml version=\"1.0\" encoding=\"US-ASCII\"?>\n{}",
        odm("\n<X>caf\u{e9}</X>")
    );
    let e = refusal(doc.as_bytes());
    assert_eq!(e.kind, Refusal::Encoding(EncodingProblem::NotAscii));
    assert_eq!(e.at, Position { line: 3, column: 4 });
}

#[test]
fn a_doctype_is_refused_and_a_comment_naming_one_is_not() {
    let e = refusal(format!("<?xml version=\"1.0\"?>\n<!DOCTYPE ODM>\n{}", odm("")).as_bytes());
    assert_eq!(e.kind, Refusal::Doctype);
    assert_eq!(e.at, Position { line: 2, column: 1 });
    read(&format!("<!-- <!DOCTYPE ODM> -->{}", odm(""))).unwrap();
}

#[test]
fn malformed_xml_is_refused_where_it_happens() {
    let cases: &[(&str, Malformed, (u64, u64))] = &[
        ("<A>\n  <B>\n</A>", Malformed::MismatchedEnd, (3, 1)),
        ("<A>é &nbsp;</A>", Malformed::BadReference, (1, 6)),
        ("<A>&#1;</A>", Malformed::BadReference, (1, 4)),
        ("<A>&#xFFFE;</A>", Malformed::BadReference, (1, 4)),
        ("<A>a & b</A>", Malformed::BadReference, (1, 6)),
        ("<A V=\"&bogus;\"/>", Malformed::BadReference, (1, 1)),
        ("<A V=\"&#0;\"/>", Malformed::BadReference, (1, 1)),
        ("<A>bell\u{7}</A>", Malformed::IllegalCharacter, (1, 4)),
        ("<A V=\"\u{1}\"/>", Malformed::IllegalCharacter, (1, 1)),
        ("<p:A/>", Malformed::Namespace, (1, 1)),
        ("<A p:v=\"1\"/>", Malformed::Namespace, (1, 1)),
        ("<A xmlns:p=\"\"/>", Malformed::Namespace, (1, 1)),
        ("<A xmlns:xml=\"urn:x\"/>", Malformed::Namespace, (1, 1)),
        ("<a:b:c xmlns:a=\"urn:a\"/>", Malformed::Namespace, (1, 1)),
        ("<A V=\"1\" V=\"2\"/>", Malformed::Attribute, (1, 1)),
        (
            "<A xmlns:p=\"urn:p\" xmlns:q=\"urn:p\" p:V=\"1\" q:V=\"2\"/>",
            Malformed::Attribute,
            (1, 1),
        ),
        ("<A V=1/>", Malformed::Attribute, (1, 1)),
        ("<A V=\"1/>", Malformed::Syntax, (1, 1)),
        ("<!-- never closed", Malformed::Syntax, (1, 1)),
    ];
    for (body, kind, (line, column)) in cases {
        let doc = format!("{}\n{body}\n</ODM>", &odm("")[..odm("").len() - 6]);
        let e = refusal(doc.as_bytes());
        assert_eq!(e.kind, Refusal::Malformed(*kind), "{body}");
        assert_eq!(
            e.at,
            Position {
                line: line + 1,
                column: *column
            },
            "{body}"
        );
    }
    let open = odm("");
    let e = refusal(format!("{}\n<A>\n  <B>\n", &open[..open.len() - 6]).as_bytes());
    assert_eq!(e.kind, Refusal::Malformed(Malformed::Unclosed));
    assert_eq!(e.at, Position { line: 3, column: 3 });
    for (doc, kind) in [
        (format!("{}<X/>", odm("")), Malformed::SecondRoot),
        (format!("{}x", odm("")), Malformed::TextOutsideRoot),
        (format!("x{}", odm("")), Malformed::TextOutsideRoot),
        ("  ".to_string(), Malformed::NoRoot),
        (
            format!(" <?xml version=\"1.0\"?>{}", odm("")),
            Malformed::Declaration,
        ),
    ] {
        assert_eq!(
            refusal(doc.as_bytes()).kind,
            Refusal::Malformed(kind),
            "{doc}"
        );
    }
    assert_eq!(
        refusal(format!("<?xml version=\"1.1\"?>{}", odm("")).as_bytes()).kind,
        Refusal::XmlVersion
    );
    // Near misses: white space, comments and PIs around the root; references XML defines.
    read(&format!(
        "<?xml version=\"1.0\"?>\n<!-- c -->\n{}\n<?pi?>\n",
        odm("<A>&#10;&#x1F600;&amp;</A>")
    ))
    .unwrap();
}

#[test]
fn reasons_never_quote_the_document() {
    let secret = "JaneRoe1970";
    for body in [
        format!("<{secret}></Other>"),
        format!("<A V=\"&{secret};\"/>"),
        format!("<A>&{secret};</A>"),
        format!("<{secret}:A/>"),
    ] {
        let e = refusal(odm(&body).as_bytes());
        assert!(!e.to_string().contains(secret), "{e}");
        assert!(!format!("{e:?}").contains(secret), "{e:?}");
    }
}

#[test]
fn skip_and_read_text_stay_inside_the_element() {
    let doc = odm("<A><B>x<C>y</C>z</B><D>one&amp;<![CDATA[two]]><E/>three</D><F/></A>");
    let mut r = XmlReader::new(doc.as_bytes(), Limits::default());
    let mut names = Vec::new();
    let mut text = String::new();
    loop {
        let (local, depth) = match r.next_token().unwrap() {
            Token::Start(s) => (s.local.to_string(), s.depth),
            Token::Eof => break,
            _ => continue,
        };
        names.push(local.clone());
        match local.as_str() {
            "B" => r.skip().unwrap(),
            "D" => assert_eq!(r.read_text(&mut text).unwrap(), 1),
            _ => {}
        }
        assert!(r.depth() < depth || local != "B" && local != "D");
    }
    assert_eq!(names, ["ODM", "A", "B", "D", "F"]);
    assert_eq!(text, "one&twothree");
}
