//! One FormData read whole: its item groups, items and AuditRecords, into a [`FormInstance`].
//!
//! The reader is just past the FormData's start tag; these functions read up to its end (or the
//! end of the element they are given), so the walk above them stays in step whatever the form
//! holds. Values of a refused form are not kept past the problem (the first problem is the reason).

use std::io::BufRead;

use super::{missing, transaction};
use crate::odm::clinical::{FormError, FormProblem};
use crate::odm::model::{AuditRecord, FormInstance, ItemValue, Position, Skipped, TypedAs};
use crate::odm::walk::{count_attrs, count_current, present, skip_counted};
use crate::odm::xml::{FileError, Piece, Refusal, StartTag, Token, XmlReader};

/// What the FormData's start tag says.
pub(super) struct Head {
    oid: Option<String>,
    repeat: Option<String>,
    problem: Option<FormProblem>,
    tx: Option<crate::odm::model::TransactionType>,
    at: Position,
    skipped: Skipped,
}

pub(super) fn head(start: &StartTag<'_>) -> Head {
    let oid = present(start.attr("FormOID"));
    let (tx, bad_tx) = transaction(start, "FormData");
    let mut skipped = Skipped::default();
    count_attrs(start, &mut skipped);
    Head {
        problem: missing(&oid, "FormData", "FormOID", start.at).or(bad_tx),
        oid,
        repeat: present(start.attr("FormRepeatKey")),
        tx,
        at: start.at,
        skipped,
    }
}

/// Notes `p` unless a problem came first.
fn note(problem: &mut Option<FormProblem>, p: FormProblem) {
    if problem.is_none() {
        *problem = Some(p);
    }
}

/// What a form has come to so far: its first problem, and the bytes its items hold.
struct Tally {
    problem: Option<FormProblem>,
    bytes: usize,
}

impl Tally {
    fn note(&mut self, p: FormProblem) {
        note(&mut self.problem, p);
    }
}

/// About the memory an item value holds: the struct and its strings.
fn size_of_item(item: &ItemValue) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let audit = item.audit.as_ref().map_or(0, |a| {
        std::mem::size_of::<AuditRecord>()
            + text(&a.user_oid)
            + text(&a.location_oid)
            + text(&a.date_time)
            + text(&a.reason_for_change)
            + text(&a.source_id)
    });
    std::mem::size_of::<ItemValue>()
        + item.group_oid.len()
        + text(&item.group_repeat)
        + item.item_oid.len()
        + text(&item.value)
        + text(&item.unit_oid)
        + audit
}

/// The local name of an ODM element; "" for other namespaces.
fn odm_name<'a>(start: &StartTag<'a>) -> &'a str {
    if start.is_odm() { start.local } else { "" }
}

/// Reads the FormData (the reader is past its start tag) into `form`, which holds the context.
pub(super) fn read_form<R: BufRead>(
    xml: &mut XmlReader<R>,
    head: Head,
    (mut form, inherited): (FormInstance, Option<FormProblem>),
) -> Result<Result<FormInstance, FormError>, FileError> {
    let mut tally = Tally {
        problem: inherited.or(head.problem),
        bytes: 0,
    };
    form.form_oid = head.oid.clone().unwrap_or_default();
    form.form_repeat = head.repeat;
    form.tx = head.tx;
    form.at = head.at;
    form.skipped = head.skipped;
    let depth = xml.depth();
    while let Some(start) = xml.next_child(depth)? {
        match odm_name(&start) {
            "AuditRecord" => form.audit = Some(read_audit(xml, &mut form.skipped)?),
            "ItemGroupData" => {
                let group = Group::of(&start, &mut form.skipped);
                read_group(xml, group, &mut form, &mut tally)?;
            }
            name if name == "ItemData" || TypedAs::from_element(name).is_some() => {
                tally.note(FormProblem::ItemOutsideGroup { at: start.at });
                skip_counted(xml, &mut form.skipped)?;
            }
            _ => skip_counted(xml, &mut form.skipped)?,
        }
    }
    Ok(match tally.problem {
        None => Ok(form),
        Some(problem) => Err(FormError {
            study_oid: Some(form.study_oid).filter(|s| !s.is_empty()),
            form_oid: head.oid,
            at: head.at,
            problem,
        }),
    })
}

/// What an ItemGroupData's start tag says.
struct Group {
    oid: String,
    repeat: Option<String>,
    tx: Option<crate::odm::model::TransactionType>,
    problem: Option<FormProblem>,
}

impl Group {
    fn of(start: &StartTag<'_>, skipped: &mut Skipped) -> Group {
        count_attrs(start, skipped);
        let (tx, problem) = transaction(start, "ItemGroupData");
        Group {
            problem,
            // Empty or absent: REDCap writes "" when a section's first field is blank.
            oid: start.attr("ItemGroupOID").unwrap_or_default().to_string(),
            repeat: present(start.attr("ItemGroupRepeatKey")),
            tx,
        }
    }
}

fn read_group<R: BufRead>(
    xml: &mut XmlReader<R>,
    mut group: Group,
    form: &mut FormInstance,
    tally: &mut Tally,
) -> Result<(), FileError> {
    if let Some(p) = group.problem.take() {
        tally.note(p);
    }
    let first = form.items.len();
    let mut audit = None;
    let depth = xml.depth();
    while let Some(start) = xml.next_child(depth)? {
        match odm_name(&start) {
            "AuditRecord" => audit = Some(read_audit(xml, &mut form.skipped)?),
            "ItemGroupData" => {
                tally.note(FormProblem::NestedGroup { at: start.at });
                skip_counted(xml, &mut form.skipped)?;
            }
            name if name == "ItemData" || TypedAs::from_element(name).is_some() => {
                let item = Item::of(&start, &mut form.skipped);
                read_item(xml, item, &group, form, tally)?;
            }
            _ => skip_counted(xml, &mut form.skipped)?,
        }
    }
    // The group's AuditRecord applies to its items that have none of their own.
    if audit.is_some() {
        for item in &mut form.items[first..] {
            if item.audit.is_none() {
                item.audit = audit.clone();
            }
        }
    }
    Ok(())
}

/// What an item's start tag says.
struct Item {
    value: ItemValue,
    typed: Option<TypedAs>,
    binary: bool,
    problem: Option<FormProblem>,
}

impl Item {
    fn of(start: &StartTag<'_>, skipped: &mut Skipped) -> Item {
        count_attrs(start, skipped);
        let typed = TypedAs::from_element(start.local);
        let oid = present(start.attr("ItemOID"));
        let (tx, bad_tx) = transaction(start, "ItemData");
        let mut problem = missing(&oid, "ItemData", "ItemOID", start.at).or(bad_tx);
        let is_null = match start.attr("IsNull") {
            None | Some("") | Some("No") => false,
            Some("Yes") => true,
            Some(_) => {
                note(&mut problem, FormProblem::BadIsNull { at: start.at });
                false
            }
        };
        // A DataType on ItemData is not ODM 1.3, but some exports write one: binary is binary.
        let declared = start.attr("DataType").and_then(TypedAs::from_data_type);
        let binary = typed.or(declared).is_some_and(TypedAs::is_binary);
        Item {
            value: ItemValue {
                group_oid: String::new(),
                group_repeat: None,
                group_tx: None,
                item_oid: oid.unwrap_or_default(),
                value: match typed {
                    None => start.attr("Value").map(str::to_string),
                    Some(_) => None,
                },
                is_null,
                unit_oid: present(start.attr("MeasurementUnitOID")),
                tx,
                typed_as: typed,
                audit: None,
                at: start.at,
            },
            typed,
            binary,
            problem,
        }
    }
}

fn read_item<R: BufRead>(
    xml: &mut XmlReader<R>,
    mut item: Item,
    group: &Group,
    form: &mut FormInstance,
    tally: &mut Tally,
) -> Result<(), FileError> {
    let at = item.value.at;
    if item.binary {
        // Never read: the content is skipped unseen.
        tally.note(FormProblem::BinaryItem {
            item_oid: item.value.item_oid,
            at,
        });
        return xml.skip();
    }
    if let Some(p) = item.problem.take() {
        tally.note(p);
    }
    let v = &mut item.value;
    // A typed form's value is its text; an ItemData's is its Value attribute or <Value> child.
    // Either may hold an AuditRecord (the writer puts an item's own there, for both).
    let mut text = String::new();
    let cap = xml.limits().max_event_bytes;
    let depth = xml.depth();
    while xml.depth() >= depth {
        match xml.next_token()? {
            Token::Text(t) if item.typed.is_some() => {
                if text.len() + t.len() > cap {
                    return Err(FileError {
                        at: xml.at(),
                        kind: Refusal::TooLarge {
                            piece: Piece::Text,
                            cap,
                        },
                    });
                }
                text.push_str(t);
            }
            Token::Start(start) => match odm_name(&start) {
                "AuditRecord" => v.audit = Some(read_audit(xml, &mut form.skipped)?),
                "MeasurementUnitRef" if item.typed.is_none() => {
                    v.unit_oid = present(start.attr("MeasurementUnitOID"));
                    xml.skip()?;
                }
                "Value" if item.typed.is_none() => {
                    let mut text = String::new();
                    xml.read_text(&mut text)?;
                    if v.value.is_some() {
                        tally.note(FormProblem::SeveralValues { at });
                    }
                    v.value = Some(text);
                }
                _ => skip_counted(xml, &mut form.skipped)?,
            },
            Token::Text(_) | Token::End { .. } => {}
            Token::Eof => break,
        }
    }
    if item.typed.is_some() {
        v.value = Some(text);
    }
    if v.is_null {
        if v.value.as_deref().is_some_and(|s| !s.is_empty()) {
            tally.note(FormProblem::NullWithValue { at });
        }
        v.value = None;
    }
    if tally.problem.is_some() {
        return Ok(());
    }
    let cap = xml.limits().max_form_items;
    if form.items.len() >= cap {
        tally.note(FormProblem::TooManyItems { cap });
        return Ok(());
    }
    v.group_oid.clone_from(&group.oid);
    v.group_repeat.clone_from(&group.repeat);
    v.group_tx = group.tx;
    let size = size_of_item(v);
    let cap = xml.limits().max_form_bytes;
    if tally.bytes + size > cap {
        tally.note(FormProblem::TooLarge { cap });
        return Ok(());
    }
    tally.bytes += size;
    form.items.push(item.value);
    Ok(())
}

/// Reads an AuditRecord (the reader is past its start tag).
pub(super) fn read_audit<R: BufRead>(
    xml: &mut XmlReader<R>,
    skipped: &mut Skipped,
) -> Result<AuditRecord, FileError> {
    let mut audit = AuditRecord::default();
    let depth = xml.depth();
    while let Some(start) = xml.next_child(depth)? {
        let slot = match odm_name(&start) {
            "UserRef" => {
                audit.user_oid = present(start.attr("UserOID"));
                xml.skip()?;
                continue;
            }
            "LocationRef" => {
                audit.location_oid = present(start.attr("LocationOID"));
                xml.skip()?;
                continue;
            }
            "DateTimeStamp" => &mut audit.date_time,
            "ReasonForChange" => &mut audit.reason_for_change,
            "SourceID" => &mut audit.source_id,
            _ => {
                count_current(xml, skipped);
                xml.skip()?;
                continue;
            }
        };
        let mut text = String::new();
        xml.read_text(&mut text)?;
        *slot = Some(text).filter(|t| !t.is_empty());
    }
    Ok(audit)
}
