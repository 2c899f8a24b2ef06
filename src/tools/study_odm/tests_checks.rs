//! Range checks once converted and loaded: values go through the validation every record takes,
//! and decide as the file means; the PHI guesses, each way; CEL literals.

use serde_json::{Map, Value, json};

use super::tests::{has, printed};
use super::tests_items::{convert_doc, one};
use super::*;
use crate::pipeline::validate::{RecordContext, validate_items};

/// Validates `items` as form F of the protocol `c` printed, as every record is.
fn validate(c: &Conversion, items: Value) -> Result<Vec<String>, String> {
    let p = Protocol::parse(&c.yaml).unwrap();
    let context = RecordContext {
        study: "S",
        site: "SITE",
        visit: "SE",
        form: "F",
    };
    let items: Map<String, Value> = items.as_object().unwrap().clone();
    validate_items(&p, context, items)
        .map(|ok| ok.findings.into_iter().map(|f| f.message).collect())
        .map_err(|r| r.reason)
}

#[test]
fn converted_range_checks_decide_records_as_the_file_means() {
    // Integers: strict comparators become inclusive bounds, Hard a hard range, Soft a range.
    let c = convert_doc(
        r#"<ItemDef OID="I.SYS" Name="Systolic" DataType="integer">
           <RangeCheck Comparator="LT" SoftHard="Hard"><CheckValue>300</CheckValue></RangeCheck>
           <RangeCheck Comparator="GT" SoftHard="Soft"><CheckValue>89.5</CheckValue></RangeCheck>
           <RangeCheck Comparator="LE" SoftHard="Soft"><CheckValue>180</CheckValue></RangeCheck></ItemDef>"#,
        "",
    );
    let sys = &c.protocol.forms["F"].items["I.SYS"];
    assert_eq!(sys.hard_range, Some([f64::NEG_INFINITY, 299.0]));
    assert_eq!(sys.range, Some([90.0, 180.0]));
    assert_eq!(validate(&c, json!({"I.SYS": 120})), Ok(vec![]));
    assert_eq!(validate(&c, json!({"I.SYS": 299})).unwrap().len(), 1);
    assert!(validate(&c, json!({"I.SYS": 300})).is_err());
    assert_eq!(validate(&c, json!({"I.SYS": 89})).unwrap().len(), 1);

    // Decimals: strict comparators become CEL checks, others bounds.
    let c = convert_doc(
        r#"<ItemDef OID="I.W" Name="Weight" DataType="float">
           <RangeCheck Comparator="GT" SoftHard="Hard"><CheckValue>0</CheckValue></RangeCheck>
           <RangeCheck Comparator="LE" SoftHard="Soft"><CheckValue>250.5</CheckValue></RangeCheck></ItemDef>"#,
        "",
    );
    let f = &c.protocol.forms["F"];
    assert_eq!(f.items["I.W"].range, Some([f64::NEG_INFINITY, 250.5]));
    assert_eq!(f.checks[0].assert, "I_W > 0.0");
    assert!(f.checks[0].hard);
    assert_eq!(f.checks[0].message, "I.W must be more than 0");
    assert!(validate(&c, json!({"I.W": 0})).is_err());
    assert_eq!(validate(&c, json!({"I.W": 0.1})), Ok(vec![]));

    // Failing conditions (Connect-A-Thon style) on integer codes, read the other way round.
    let c = convert_doc(
        r#"<ItemDef OID="I.SEV" Name="Severity" DataType="integer"><CodeListRef CodeListOID="CL"/>
           <RangeCheck Comparator="LT" SoftHard="Hard"><CheckValue>1</CheckValue><ErrorMessage><TranslatedText>Between 1 and 3</TranslatedText></ErrorMessage></RangeCheck>
           <RangeCheck Comparator="GT" SoftHard="Hard"><CheckValue>3</CheckValue></RangeCheck>
           <RangeCheck Comparator="EQ" SoftHard="Soft"><CheckValue>3</CheckValue><ErrorMessage><TranslatedText>Really severe?</TranslatedText></ErrorMessage></RangeCheck></ItemDef>"#,
        r#"<CodeList OID="CL" DataType="integer"><EnumeratedItem CodedValue="1"/><EnumeratedItem CodedValue="2"/><EnumeratedItem CodedValue="3"/><EnumeratedItem CodedValue="10"/></CodeList>"#,
    );
    assert!(has(
        &c,
        "note: item I.SEV: its range checks cannot all hold as the conditions valid data meets (ODM 1.3.2); read as the conditions data fails instead: review them"
    ));
    assert_eq!(c.counts.flipped, 1);
    let asserts: Vec<&str> = c.protocol.forms["F"]
        .checks
        .iter()
        .map(|k| k.assert.as_str())
        .collect();
    assert_eq!(
        asserts,
        [
            "double(I_SEV) >= 1.0",
            "double(I_SEV) <= 3.0",
            "I_SEV != '3'"
        ]
    );
    assert_eq!(validate(&c, json!({"I.SEV": "2"})), Ok(vec![]));
    assert_eq!(
        validate(&c, json!({"I.SEV": "3"})),
        Ok(vec!["Really severe?".to_string()])
    );
    // Compared as numbers, not as text ("10" > "3").
    let refused = validate(&c, json!({"I.SEV": "10"})).unwrap_err();
    assert!(refused.contains("I.SEV.RC2"), "{refused}");

    // The same checks as valid conditions stay as written.
    let c = convert_doc(
        r#"<ItemDef OID="I.N" Name="N" DataType="integer">
           <RangeCheck Comparator="GE" SoftHard="Hard"><CheckValue>1</CheckValue></RangeCheck>
           <RangeCheck Comparator="LE" SoftHard="Hard"><CheckValue>3</CheckValue></RangeCheck>
           <RangeCheck Comparator="NE" SoftHard="Soft"><CheckValue>2</CheckValue></RangeCheck>
           <RangeCheck Comparator="IN" SoftHard="Soft"><CheckValue>1</CheckValue><CheckValue>2</CheckValue><CheckValue>3</CheckValue></RangeCheck>
           <RangeCheck Comparator="NI" SoftHard="Soft"><CheckValue>7</CheckValue></RangeCheck></ItemDef>"#,
        "",
    );
    assert_eq!(c.counts.flipped, 0);
    let f = &c.protocol.forms["F"];
    assert_eq!(f.items["I.N"].hard_range, Some([1.0, 3.0]));
    let asserts: Vec<&str> = f.checks.iter().map(|k| k.assert.as_str()).collect();
    assert_eq!(asserts, ["I_N != 2", "I_N in [1, 2, 3]", "!(I_N in [7])"]);
    assert_eq!(validate(&c, json!({"I.N": 2})).unwrap().len(), 1);
}

#[test]
fn checks_on_texts_dates_times_and_booleans_are_cel_checks() {
    let c = convert_doc(
        r#"<ItemDef OID="I.T" Name="T" DataType="text">
             <RangeCheck Comparator="IN" SoftHard="Hard"><CheckValue>it's</CheckValue><CheckValue>a\b</CheckValue></RangeCheck></ItemDef>
           <ItemDef OID="I.D" Name="D" DataType="date">
             <RangeCheck Comparator="GE" SoftHard="Soft"><CheckValue>2020-01-01</CheckValue></RangeCheck></ItemDef>
           <ItemDef OID="I.H" Name="H" DataType="time">
             <RangeCheck Comparator="LT" SoftHard="Soft"><CheckValue>18:00</CheckValue></RangeCheck>
             <RangeCheck Comparator="GT"><CheckValue>06:00+01:00</CheckValue></RangeCheck></ItemDef>
           <ItemDef OID="I.B" Name="B" DataType="boolean">
             <RangeCheck Comparator="EQ" SoftHard="Soft"><CheckValue>1</CheckValue></RangeCheck></ItemDef>
           <ItemDef OID="I.DT" Name="DT" DataType="datetime">
             <RangeCheck Comparator="LT" SoftHard="Soft"><CheckValue>2020-01-01T00:00</CheckValue></RangeCheck></ItemDef>
           <ItemDef OID="I.Q" Name="Q" DataType="integer">
             <RangeCheck Comparator="LT" SoftHard="Soft"><CheckValue>many</CheckValue></RangeCheck>
             <RangeCheck Comparator="LT" SoftHard="Soft"><CheckValue>1</CheckValue><CheckValue>2</CheckValue></RangeCheck>
             <RangeCheck Comparator="XX" SoftHard="Soft"><CheckValue>1</CheckValue></RangeCheck>
             <RangeCheck Comparator="EQ" SoftHard="Soft"/></ItemDef>"#,
        "",
    );
    let asserts: Vec<&str> = c.protocol.forms["F"]
        .checks
        .iter()
        .map(|k| k.assert.as_str())
        .collect();
    assert_eq!(
        asserts,
        [
            r"I_T in ['it\'s', 'a\\b']",
            "I_D >= '2020-01-01'",
            "I_H < '18:00:00'",
            "I_B == true"
        ]
    );
    for line in [
        "not converted: item I.H: RangeCheck 2 has a CheckValue that is not of the item's type (time)",
        "not converted: item I.DT: RangeCheck 1 compares a datetime item: not converted",
        "not converted: item I.Q: RangeCheck 1 has a CheckValue that is not of the item's type (integer)",
        "not converted: item I.Q: RangeCheck 2 has several CheckValues for a comparator that takes one",
        "not converted: item I.Q: RangeCheck 3 has no Comparator ODM defines",
        "not converted: item I.Q: RangeCheck 4 has no CheckValue",
    ] {
        assert!(has(&c, line), "missing: {line}\n{:#?}", printed(&c));
    }
    // The literals mean what the file wrote: quotes and backslashes included.
    assert_eq!(validate(&c, json!({"I.T": "it's"})), Ok(vec![]));
    assert_eq!(validate(&c, json!({"I.T": "a\\b"})), Ok(vec![]));
    assert!(validate(&c, json!({"I.T": "its"})).is_err());
    assert_eq!(validate(&c, json!({"I.D": "2019-12-31"})).unwrap().len(), 1);
    assert_eq!(validate(&c, json!({"I.D": "2020-01-01"})), Ok(vec![]));
    assert_eq!(validate(&c, json!({"I.H": "17:59"})), Ok(vec![]));
    assert_eq!(validate(&c, json!({"I.B": false})).unwrap().len(), 1);
}

#[test]
fn range_checks_in_units_and_checks_that_hold_neither_way() {
    let c = convert_doc(
        r#"<ItemDef OID="I.U" Name="U" DataType="integer"><MeasurementUnitRef MeasurementUnitOID="MU.A"/>
             <RangeCheck Comparator="LE" SoftHard="Hard"><CheckValue>5</CheckValue><MeasurementUnitRef MeasurementUnitOID="MU.A"/></RangeCheck>
             <RangeCheck Comparator="LE" SoftHard="Hard"><CheckValue>9</CheckValue><MeasurementUnitRef MeasurementUnitOID="MU.B"/></RangeCheck></ItemDef>
           <ItemDef OID="I.V" Name="V" DataType="integer">
             <RangeCheck Comparator="GE" SoftHard="Soft"><CheckValue>2</CheckValue><MeasurementUnitRef MeasurementUnitOID="MU.A"/></RangeCheck></ItemDef>
           <ItemDef OID="I.B" Name="B" DataType="boolean">
             <RangeCheck Comparator="EQ" SoftHard="Soft"><CheckValue>1</CheckValue></RangeCheck>
             <RangeCheck Comparator="EQ" SoftHard="Soft"><CheckValue>0</CheckValue></RangeCheck></ItemDef>"#,
        "",
    );
    let f = &c.protocol.forms["F"];
    assert_eq!(f.items["I.U"].hard_range, Some([f64::NEG_INFINITY, 5.0]));
    assert_eq!(f.items["I.V"].range, Some([2.0, f64::INFINITY]));
    assert!(f.checks.is_empty());
    assert!(has(
        &c,
        "not converted: item I.U: RangeCheck 2 is stated in unit MU.B, which is not one of the item's units"
    ));
    assert!(has(
        &c,
        "not converted: item I.B: its range checks cannot all hold, read as the conditions valid data meets or as those it fails: none converted"
    ));
}

#[test]
fn phi_guesses_by_name_oid_and_question_are_conservative() {
    let guess = |name: &str, dt: &str, question: &str| -> bool {
        let q = if question.is_empty() {
            String::new()
        } else {
            format!("<Question><TranslatedText>{question}</TranslatedText></Question>")
        };
        let (i, _) = one(
            &format!(r#"<ItemDef OID="I.X" Name="{name}" DataType="{dt}">{q}</ItemDef>"#),
            "",
        );
        i.phi
    };
    for (name, dt, question) in [
        ("Date of Birth", "date", ""),
        ("DOB", "text", ""),
        ("BirthDate", "partialDate", ""),
        ("BRTHDTC", "text", ""),
        ("X1", "date", "When is your birthday?"),
        ("Patient Name", "text", ""),
        ("surname", "text", ""),
        ("Name", "text", ""),
        ("firstName", "text", ""),
        ("Subject initials", "text", ""),
        ("PTINIT", "text", ""),
        ("Phone", "text", ""),
        ("TEL", "integer", ""),
        ("E-mail", "text", ""),
        ("Street, City, State, ZIP", "text", ""),
        ("Postal code", "text", ""),
        ("ZIP", "integer", ""),
        ("NHS number", "text", ""),
        ("SSN", "text", ""),
        ("MRN", "text", ""),
        ("Medical record number", "integer", ""),
        ("Geburtsdatum", "date", ""),
        ("email1", "text", ""),
        ("phone2", "text", ""),
    ] {
        assert!(guess(name, dt, question), "{name} ({dt}) should be phi");
    }
    for (name, dt, question) in [
        ("Medication Name", "text", ""),
        ("Laboratory name", "text", ""),
        ("Initial visit date", "date", ""),
        ("Phone contact made?", "boolean", ""),
        ("Date of birth known?", "boolean", ""),
        ("Address change date", "date", ""),
        ("Weight", "float", ""),
        ("Capacity", "text", ""),
        ("Country of birth", "text", ""),
        ("Telemetry", "text", ""),
        ("AE term", "text", "Name the adverse event"),
        ("Telemetry2", "text", ""),
        ("Street2Test", "boolean", ""),
    ] {
        assert!(
            !guess(name, dt, question),
            "{name} ({dt}) should not be phi"
        );
    }
    // Code items are choices from a list: no guess by name.
    let (i, _) = one(
        r#"<ItemDef OID="I.X" Name="Patient name known" DataType="text"><CodeListRef CodeListOID="CL"/></ItemDef>"#,
        r#"<CodeList OID="CL" DataType="text"><EnumeratedItem CodedValue="Y"/></CodeList>"#,
    );
    assert!(!i.phi);
}

#[test]
fn words_are_cut_at_case_changes_and_punctuation() {
    assert_eq!(phi::words("DateOfBirth"), ["date", "of", "birth"]);
    assert_eq!(phi::words("date_of_birth"), ["date", "of", "birth"]);
    assert_eq!(phi::words("BRTHDTC"), ["brthdtc"]);
    assert_eq!(phi::words("E-mail address:"), ["e", "mail", "address"]);
    assert_eq!(phi::words("patient's name"), ["patient", "s", "name"]);
    assert_eq!(phi::words("Prénom"), ["prénom"]);
    // A numbered copy of a field, as REDCap projects name them (email1, email2).
    assert_eq!(phi::words("email2"), ["email", "2"]);
    assert_eq!(phi::words("PHONE_2B"), ["phone", "2", "b"]);
    assert_eq!(phi::words("Ae1Term"), ["ae", "1", "term"]);
}

#[test]
fn cel_string_literals_escape_what_cel_would_read_otherwise() {
    assert_eq!(ranges::cel_string("plain"), "'plain'");
    assert_eq!(ranges::cel_string("it's"), r"'it\'s'");
    assert_eq!(ranges::cel_string("a\\b\nc\u{1}"), r"'a\\b\nc\u0001'");
}
