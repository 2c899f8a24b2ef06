//! The forms of one MetaDataVersion: FormDef -> a form (its OID its name), ItemGroupDef ->
//! a repeating group (`Repeating="Yes"`) or, for the others, its items flattened into the form's
//! items, ItemRef -> the item (`Mandatory="Yes"` -> `required`), its checks placed where the item
//! is (the form, or the group: run per row).
//!
//! Names share one namespace per form, and each item has one CEL name: an item referenced twice
//! in a form (two non-repeating groups) is one item, required if either reference says so; one
//! that would be in two places, whose CEL name another item of the form has, or whose CEL name is
//! a context variable (`site`, `visit`, ...) cannot be in the protocol and is listed.

use std::collections::{BTreeMap, HashMap};

use crate::odm::metadata::{CodeList, FormDef, GroupDef, ItemDef, MetaDataVersion};
use crate::protocol::file::{FormFile, GroupFile};
use crate::protocol::{CONTEXT_VARIABLES, cel_name};

use super::items::{self, Converted};
use super::report::{Kind, Report, shown};

/// Counts for the summary.
#[derive(Default)]
pub(super) struct Counts {
    pub groups: usize,
    pub items: usize,
    pub item_defs: usize,
    pub flipped: usize,
    pub range_checked: usize,
}

/// The definitions of a MetaDataVersion by OID (the first of an OID; a second is listed).
struct Defs<'a> {
    groups: HashMap<&'a str, &'a GroupDef>,
    items: HashMap<&'a str, &'a ItemDef>,
    code_lists: HashMap<&'a str, &'a CodeList>,
}

fn index<'a, T>(
    defs: &'a [T],
    oid: impl Fn(&T) -> &str,
    what: &str,
    report: &mut Report,
) -> HashMap<&'a str, &'a T> {
    let mut map = HashMap::new();
    for d in defs {
        let key = oid(d);
        if key.is_empty() {
            report.not_converted(format!("a {what} without OID"));
        } else if map.contains_key(key) {
            report.not_converted(format!(
                "{what} {} is defined twice: the first kept",
                shown(key)
            ));
        } else {
            map.insert(key, d);
        }
    }
    map
}

/// Where an item of a form is: the form itself, or a repeating group.
#[derive(Clone, PartialEq, Eq)]
enum Place {
    Form,
    Group(String),
}

/// One form being built.
struct Building<'a> {
    form_oid: &'a str,
    file: FormFile,
    /// Item or group name -> where it is (None for a repeating group).
    places: HashMap<String, Option<Place>>,
    /// CEL name -> item.
    cels: HashMap<String, String>,
}

pub(super) fn convert(
    mdv: &MetaDataVersion,
    report: &mut Report,
    counts: &mut Counts,
) -> BTreeMap<String, FormFile> {
    let defs = Defs {
        groups: index(&mdv.groups, |g| &g.oid, "ItemGroupDef", report),
        items: index(&mdv.items, |i| &i.oid, "ItemDef", report),
        code_lists: index(&mdv.code_lists, |c| &c.oid, "CodeList", report),
    };
    let mut converted: HashMap<&str, Converted> = HashMap::new();
    let mut forms = BTreeMap::new();
    for form in &mdv.forms {
        if form.oid.is_empty() {
            report.not_converted("a FormDef without OID".into());
            continue;
        }
        if forms.contains_key(&form.oid) {
            report.not_converted(format!(
                "FormDef {} is defined twice: the first kept",
                shown(&form.oid)
            ));
            continue;
        }
        let built = build(form, &defs, &mut converted, report, counts);
        forms.insert(form.oid.clone(), built);
    }
    counts.item_defs = converted.len();
    counts.flipped = converted.values().filter(|c| c.flipped).count();
    counts.range_checked = converted.values().filter(|c| c.range_checks > 0).count();
    forms
}

fn build<'a>(
    form: &'a FormDef,
    defs: &Defs<'a>,
    converted: &mut HashMap<&'a str, Converted>,
    report: &mut Report,
    counts: &mut Counts,
) -> FormFile {
    let mut b = Building {
        form_oid: &form.oid,
        file: FormFile {
            title: form.name.as_deref().map(super::tidy),
            ..FormFile::default()
        },
        places: HashMap::new(),
        cels: HashMap::new(),
    };
    let fname = shown(&form.oid);
    for gref in &form.groups {
        let Some(group) = defs.groups.get(gref.oid.as_str()) else {
            report.not_converted(format!(
                "form {fname}: its ItemGroupRef names {}, which the metadata version does not define",
                shown(&gref.oid)
            ));
            continue;
        };
        if gref.condition.is_some() {
            report.group(
                Kind::NotConverted,
                "item groups collected under a CollectionExceptionCondition (the condition is not checked)",
                format!("{fname}/{}", shown(&group.oid)),
            );
        }
        let place = match group.repeating.as_deref() {
            Some("Yes") => {
                if b.places.contains_key(&group.oid) {
                    report.not_converted(format!(
                        "form {fname}: group {} has the name of another item or group of the form: \
                         not converted, nor its items",
                        shown(&group.oid)
                    ));
                    continue;
                }
                b.places.insert(group.oid.clone(), None);
                b.file.groups.insert(
                    group.oid.clone(),
                    GroupFile {
                        label: group.name.as_deref().map(super::tidy),
                        ..GroupFile::default()
                    },
                );
                counts.groups += 1;
                Place::Group(group.oid.clone())
            }
            None | Some("No") => Place::Form,
            Some(other) => {
                report.not_converted(format!(
                    "group {}: Repeating {} is neither Yes nor No: its items are the form's",
                    shown(&group.oid),
                    shown(other)
                ));
                Place::Form
            }
        };
        for iref in &group.items {
            let Some(def) = defs.items.get(iref.oid.as_str()) else {
                report.not_converted(format!(
                    "group {}: its ItemRef names {}, which the metadata version does not define",
                    shown(&group.oid),
                    shown(&iref.oid)
                ));
                continue;
            };
            let conv = converted
                .entry(def.oid.as_str())
                .or_insert_with(|| items::convert(def, &defs.code_lists, report))
                .clone();
            let required = iref.mandatory && iref.condition.is_none();
            if iref.mandatory && iref.condition.is_some() {
                report.group(
                    Kind::NotConverted,
                    "items Mandatory under a CollectionExceptionCondition (not made required: the \
                     condition is not checked)",
                    shown(&def.oid),
                );
            }
            if let Some(method) = &iref.method {
                report.group(
                    Kind::NotConverted,
                    "items computed by a MethodDef (the method is not run)",
                    format!("{} ({})", shown(&def.oid), shown(method)),
                );
            }
            b.add(&def.oid, conv, required, &place, report, counts);
        }
    }
    b.file
}

impl Building<'_> {
    fn add(
        &mut self,
        oid: &str,
        conv: Converted,
        required: bool,
        place: &Place,
        report: &mut Report,
        counts: &mut Counts,
    ) {
        let fname = shown(self.form_oid);
        let name = shown(oid);
        if let Some(existing) = self.places.get(oid) {
            if existing.as_ref() == Some(place) && *place == Place::Form {
                // The same item in two non-repeating groups: one item of the form.
                if let Some(item) = self.file.items.get_mut(oid) {
                    item.required |= required;
                }
            } else {
                report.not_converted(format!(
                    "form {fname}: item {name} is referenced where the form has it already (or a \
                     group of its name): kept in the first place only"
                ));
            }
            return;
        }
        let cel = cel_name(oid);
        if CONTEXT_VARIABLES.contains(&cel.as_str()) {
            report.not_converted(format!(
                "form {fname}: item {name} would be read in CEL as the context variable {cel}: the \
                 protocol cannot hold it (rename it in the source, or edit the protocol)"
            ));
            return;
        }
        if let Some(other) = self.cels.get(&cel) {
            report.not_converted(format!(
                "form {fname}: item {name} has the CEL name {cel} of item {}: the protocol cannot \
                 hold both, the first is kept",
                shown(other)
            ));
            return;
        }
        self.cels.insert(cel, oid.to_string());
        self.places.insert(oid.to_string(), Some(place.clone()));
        let mut item = conv.item;
        item.required = required;
        counts.items += 1;
        match place {
            Place::Form => {
                self.file.items.insert(oid.to_string(), item);
                self.file.checks.extend(conv.checks);
            }
            Place::Group(g) => {
                if let Some(group) = self.file.groups.get_mut(g) {
                    group.items.insert(oid.to_string(), item);
                    group.checks.extend(conv.checks);
                }
            }
        }
    }
}
