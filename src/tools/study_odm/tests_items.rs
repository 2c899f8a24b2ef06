//! Each mapping rule of one ItemDef (type and bounds, codes, units, labels), and the names a form
//! cannot hold twice.

use super::tests::{has, ok, printed};
use super::*;
use crate::odm::xml::ODM13_NS;
use crate::protocol::{CodeType, Codes, Item, ItemType};

/// A document with one form F holding `items` (ItemDef elements, each referenced) in one group,
/// repeating or not, and `extra` definitions (code lists).
pub(super) fn doc(items: &str, extra: &str, repeating: bool) -> String {
    let refs: String = items
        .match_indices("<ItemDef OID=\"")
        .map(|(at, _)| {
            let rest = &items[at + 14..];
            let oid = &rest[..rest.find('"').unwrap()];
            format!(r#"<ItemRef ItemOID="{oid}" Mandatory="No"/>"#)
        })
        .collect();
    let repeating = if repeating { "Yes" } else { "No" };
    format!(
        r#"<ODM xmlns="{ODM13_NS}" ODMVersion="1.3.2" FileType="Snapshot"><Study OID="S">
        <MetaDataVersion OID="M">
        <StudyEventDef OID="SE" Name="Visit" Repeating="No" Type="Scheduled"/>
        <FormDef OID="F" Name="Form" Repeating="No"><ItemGroupRef ItemGroupOID="G" Mandatory="No"/></FormDef>
        <ItemGroupDef OID="G" Name="Group" Repeating="{repeating}">{refs}</ItemGroupDef>
        {items}{extra}</MetaDataVersion></Study>
        <AdminData><Location OID="SITE" Name="Site" LocationType="Site"/></AdminData></ODM>"#
    )
}

pub(super) fn convert_doc(items: &str, extra: &str) -> Conversion {
    ok(doc(items, extra, false).as_bytes(), &Options::default())
}

/// The one item of a one-item document, with the conversion.
pub(super) fn one(item_def: &str, extra: &str) -> (Item, Conversion) {
    let c = convert_doc(item_def, extra);
    let item = c.protocol.forms["F"].items.values().next().unwrap().clone();
    (item, c)
}

fn kind_of(data_type: &str) -> ItemType {
    one(
        &format!(r#"<ItemDef OID="I.X" Name="X" DataType="{data_type}"/>"#),
        "",
    )
    .0
    .kind
}

#[test]
fn data_types_become_item_types_and_the_others_text_listed() {
    for (dt, kind) in [
        ("integer", ItemType::Integer),
        ("float", ItemType::Decimal),
        ("double", ItemType::Decimal),
        ("text", ItemType::Text),
        ("string", ItemType::Text),
        ("date", ItemType::Date),
        ("time", ItemType::Time),
        ("datetime", ItemType::Datetime),
        ("boolean", ItemType::Boolean),
        ("partialDate", ItemType::PartialDate),
        ("partialTime", ItemType::PartialTime),
        ("partialDatetime", ItemType::PartialDatetime),
        ("base64Binary", ItemType::Binary),
        ("hexBinary", ItemType::Binary),
        ("base64Float", ItemType::Binary),
        ("hexFloat", ItemType::Binary),
    ] {
        assert_eq!(kind_of(dt), kind, "{dt}");
    }
    for dt in [
        "URI",
        "durationDatetime",
        "intervalDatetime",
        "incompleteDate",
        "incompleteTime",
        "incompleteDatetime",
        "Integer",
    ] {
        let (item, c) = one(
            &format!(r#"<ItemDef OID="I.X" Name="X" DataType="{dt}"/>"#),
            "",
        );
        assert_eq!(item.kind, ItemType::Text, "{dt}");
        let line = format!(
            "not converted: DataType {dt} has no type in the protocol: made text items: I.X"
        );
        assert!(has(&c, &line), "{dt}: {:#?}", printed(&c));
    }
    let (item, c) = one(r#"<ItemDef OID="I.X" Name="X"/>"#, "");
    assert_eq!(item.kind, ItemType::Text);
    assert!(has(&c, "not converted: no DataType: made text items: I.X"));
}

#[test]
fn length_and_significant_digits_become_bounds() {
    let (i, _) = one(
        r#"<ItemDef OID="I.X" Name="X" DataType="integer" Length="3"/>"#,
        "",
    );
    assert_eq!((i.digits, i.fraction_digits), (Some(3), None));
    let (d, _) = one(
        r#"<ItemDef OID="I.X" Name="X" DataType="float" Length="6" SignificantDigits="2"/>"#,
        "",
    );
    assert_eq!((d.digits, d.fraction_digits), (Some(6), Some(2)));
    let (t, _) = one(
        r#"<ItemDef OID="I.X" Name="X" DataType="text" Length="40"/>"#,
        "",
    );
    assert_eq!(t.max_length, Some(40));
    // Where Length means nothing it is not used; where it is not a count, it is listed.
    let (date, c) = one(
        r#"<ItemDef OID="I.X" Name="X" DataType="date" Length="999"/>"#,
        "",
    );
    assert_eq!((date.max_length, date.digits), (None, None));
    assert_eq!(c.counts.not_converted, 0, "{:#?}", printed(&c));
    let (_, c) = one(
        r#"<ItemDef OID="I.X" Name="X" DataType="text" Length="ten"/>"#,
        "",
    );
    assert!(has(
        &c,
        "not converted: item I.X: its Length is not a positive number"
    ));
    let (d, c) = one(
        r#"<ItemDef OID="I.X" Name="X" DataType="float" Length="2" SignificantDigits="3"/>"#,
        "",
    );
    assert_eq!((d.digits, d.fraction_digits), (Some(2), None));
    assert!(has(
        &c,
        "not converted: item I.X: its SignificantDigits is not a number of digits at most its Length"
    ));
    let (i, c) = one(
        r#"<ItemDef OID="I.X" Name="X" DataType="integer" SignificantDigits="1"/>"#,
        "",
    );
    assert_eq!(i.fraction_digits, None);
    assert!(has(
        &c,
        "not converted: SignificantDigits on items that are not decimals: I.X"
    ));
}

#[test]
fn code_lists_become_codes_of_their_type() {
    let list = |dt: &str, items: &str| {
        format!(r#"<CodeList OID="CL" Name="CL" DataType="{dt}">{items}</CodeList>"#)
    };
    let decoded = r#"<CodeListItem CodedValue="01"><Decode><TranslatedText xml:lang="fr">Un</TranslatedText><TranslatedText xml:lang="en">One</TranslatedText></Decode></CodeListItem><CodeListItem CodedValue="2"/>"#;
    let def = r#"<ItemDef OID="I.X" Name="X" DataType="integer"><CodeListRef CodeListOID="CL"/></ItemDef>"#;
    let (i, _) = one(def, &list("integer", decoded));
    assert_eq!(i.kind, ItemType::Code);
    assert_eq!(i.code_type, Some(CodeType::Integer));
    // Canonical integer codes; a code without decode gets an empty label beside those that have one.
    assert_eq!(i.codes, Some(Codes::labelled([("1", "One"), ("2", "")])));
    let (i, _) = one(
        def,
        &list(
            "float",
            r#"<EnumeratedItem CodedValue="1.50"/><EnumeratedItem CodedValue="2"/>"#,
        ),
    );
    assert_eq!(i.code_type, Some(CodeType::Decimal));
    assert_eq!(i.codes, Some(Codes::list(["1.5", "2"])));
    // Codes not all of the list's type: text codes, said so.
    let (i, c) = one(
        def,
        &list(
            "integer",
            r#"<EnumeratedItem CodedValue="1"/><EnumeratedItem CodedValue="U"/>"#,
        ),
    );
    assert_eq!(
        (i.code_type, i.codes),
        (None, Some(Codes::list(["1", "U"])))
    );
    assert!(has(
        &c,
        "note: CodeList CL: its codes are not all integer codes: read as text codes"
    ));
    // Text codes are kept as written.
    let text =
        r#"<ItemDef OID="I.X" Name="X" DataType="text"><CodeListRef CodeListOID="CL"/></ItemDef>"#;
    let (i, _) = one(
        text,
        &list(
            "text",
            r#"<EnumeratedItem CodedValue="01"/><EnumeratedItem CodedValue="1"/>"#,
        ),
    );
    assert_eq!(i.codes, Some(Codes::list(["01", "1"])));
    // No code list to take: the item keeps its type, listed.
    let (i, c) = one(text, &list("text", ""));
    assert_eq!(i.kind, ItemType::Text);
    assert!(has(
        &c,
        "not converted: item I.X: CodeList CL has no codes, so the item keeps its own type"
    ));
    let (i, c) = one(text, "");
    assert_eq!(i.kind, ItemType::Text);
    assert!(has(
        &c,
        "not converted: item I.X: its CodeListRef names CL, which the metadata version does not define"
    ));
    let date =
        r#"<ItemDef OID="I.X" Name="X" DataType="date"><CodeListRef CodeListOID="CL"/></ItemDef>"#;
    let (i, c) = one(date, &list("text", r#"<EnumeratedItem CodedValue="A"/>"#));
    assert_eq!(i.kind, ItemType::Date);
    assert!(has(
        &c,
        "not converted: item I.X: a date item keeps no code list (CL)"
    ));
}

#[test]
fn units_labels_and_questions() {
    let (i, _) = one(
        r#"<ItemDef OID="I.X" Name="X" DataType="float"><MeasurementUnitRef MeasurementUnitOID="MU.KG"/></ItemDef>"#,
        "",
    );
    assert_eq!((i.unit.as_deref(), i.units), (Some("MU.KG"), None));
    let (i, _) = one(
        r#"<ItemDef OID="I.X" Name="X" DataType="integer"><MeasurementUnitRef MeasurementUnitOID="MU.KG"/><MeasurementUnitRef MeasurementUnitOID="MU.LB"/><MeasurementUnitRef MeasurementUnitOID="MU.KG"/></ItemDef>"#,
        "",
    );
    assert_eq!(i.unit.as_deref(), Some("MU.KG"));
    assert_eq!(
        i.units,
        Some(vec!["MU.KG".to_string(), "MU.LB".to_string()])
    );
    let (i, c) = one(
        r#"<ItemDef OID="I.X" Name="X" DataType="text"><MeasurementUnitRef MeasurementUnitOID="MU.A"/><MeasurementUnitRef MeasurementUnitOID="MU.B"/></ItemDef>"#,
        "",
    );
    assert_eq!((i.unit.as_deref(), i.units), (Some("MU.A"), None));
    assert!(has(
        &c,
        "not converted: item I.X: units beyond the first (1 more): the protocol lists several units for numbers only"
    ));
    // Name as label and Question as question; a Name that is the OID gives way to the question.
    let (i, _) = one(
        r#"<ItemDef OID="I.X" Name="Heart rate" DataType="integer"><Question><TranslatedText xml:lang="en">Heart
        rate at rest?</TranslatedText></Question></ItemDef>"#,
        "",
    );
    assert_eq!(i.label.as_deref(), Some("Heart rate"));
    assert_eq!(i.question.as_deref(), Some("Heart rate at rest?"));
    let (i, _) = one(
        r#"<ItemDef OID="hr" Name="hr" DataType="integer"><Question><TranslatedText>Heart rate</TranslatedText></Question></ItemDef>"#,
        "",
    );
    assert_eq!((i.label.as_deref(), i.question), (Some("Heart rate"), None));
}

#[test]
fn names_a_form_cannot_hold_twice_are_listed() {
    let c = ok(
        format!(
            r#"<ODM xmlns="{ODM13_NS}"><Study OID="S"><MetaDataVersion OID="M">
            <StudyEventDef OID="SE"/>
            <FormDef OID="F"><ItemGroupRef ItemGroupOID="G1"/><ItemGroupRef ItemGroupOID="G2"/><ItemGroupRef ItemGroupOID="I.A"/></FormDef>
            <ItemGroupDef OID="G1" Repeating="No"><ItemRef ItemOID="I.A"/><ItemRef ItemOID="I_A"/><ItemRef ItemOID="site"/><ItemRef ItemOID="I.B"/></ItemGroupDef>
            <ItemGroupDef OID="G2" Repeating="Yes"><ItemRef ItemOID="I.B"/><ItemRef ItemOID="I.C"/></ItemGroupDef>
            <ItemGroupDef OID="I.A" Repeating="Yes"><ItemRef ItemOID="I.C"/></ItemGroupDef>
            <ItemDef OID="I.A" DataType="text"/><ItemDef OID="I_A" DataType="text"/>
            <ItemDef OID="site" DataType="text"/><ItemDef OID="I.B" DataType="text"/><ItemDef OID="I.C" DataType="text"/>
            </MetaDataVersion></Study></ODM>"#
        )
        .as_bytes(),
        &Options {
            sites: vec!["S1".into()],
            ..Options::default()
        },
    );
    let f = &c.protocol.forms["F"];
    assert_eq!(f.items.keys().collect::<Vec<_>>(), ["I.A", "I.B"]);
    assert_eq!(f.groups.keys().collect::<Vec<_>>(), ["G2"]);
    assert_eq!(f.groups["G2"].items.keys().collect::<Vec<_>>(), ["I.C"]);
    for line in [
        "not converted: form F: item I_A has the CEL name I_A of item I.A: the protocol cannot hold both, the first is kept",
        "not converted: form F: item site would be read in CEL as the context variable site: the protocol cannot hold it (rename it in the source, or edit the protocol)",
        "not converted: form F: item I.B is referenced where the form has it already (or a group of its name): kept in the first place only",
        "not converted: form F: group I.A has the name of another item or group of the form: not converted, nor its items",
    ] {
        assert!(has(&c, line), "missing: {line}\n{:#?}", printed(&c));
    }
}
