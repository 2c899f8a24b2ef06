//! The definitions of a MetaDataVersion, each read whole into its type: Include, Protocol,
//! StudyEventDef, FormDef, ItemGroupDef, ItemDef (with its Question, CodeListRef,
//! MeasurementUnitRefs, RangeChecks and OpenClinica's item details), CodeList, ConditionDef and
//! MethodDef. An ItemGroupRef where ODM 1.3 has none (in a StudyEventDef or an ItemGroupDef) is
//! the ODM 2.0 structure, refused as the ClinicalData reader refuses it.

use std::io::BufRead;

use super::read::{Head, Passed, Walk};
use super::{
    CodeList, CodeListItem, EventDef, FormDef, GroupDef, Include, ItemDef, MetaDataVersion,
    MetadataError, Named, RangeCheck, Ref, Text,
};
use crate::odm::model::count_ns;
use crate::odm::xml::{FileError, Refusal};

impl<R: BufRead> Walk<R> {
    pub(super) fn version(&mut self, head: &Head) -> Result<MetaDataVersion, MetadataError> {
        let vendor = self.vendor_of(head)?;
        let mut mdv = MetaDataVersion {
            oid: head.oid("OID"),
            name: head.attr("Name"),
            vendor,
            at: head.at,
            ..MetaDataVersion::default()
        };
        while let Some((name, child)) = self.child(head.depth)? {
            match name.as_str() {
                "Include" => {
                    self.keep(&child)?;
                    mdv.includes.push(Include {
                        study_oid: child.oid("StudyOID"),
                        metadata_version_oid: child.oid("MetaDataVersionOID"),
                    });
                    self.xml.skip()?;
                }
                "Protocol" => {
                    self.keep(&child)?;
                    while let Some((name, r)) = self.child(child.depth)? {
                        if name == "StudyEventRef" {
                            mdv.protocol.push(self.reference(&r, "StudyEventOID")?);
                        } else {
                            self.pass(&Passed::Odm(name))?;
                        }
                    }
                }
                "StudyEventDef" => {
                    self.keep(&child)?;
                    let mut event = EventDef {
                        oid: child.oid("OID"),
                        name: child.attr("Name"),
                        repeating: child.attr("Repeating"),
                        kind: child.attr("Type"),
                        at: child.at,
                        ..EventDef::default()
                    };
                    while let Some((name, r)) = self.child(child.depth)? {
                        match name.as_str() {
                            "FormRef" => event.forms.push(self.reference(&r, "FormOID")?),
                            "ItemGroupRef" => return Err(odm2(&r)),
                            _ => self.pass(&Passed::Odm(name))?,
                        }
                    }
                    mdv.events.push(event);
                }
                "FormDef" => {
                    self.keep(&child)?;
                    let mut form = FormDef {
                        oid: child.oid("OID"),
                        name: child.attr("Name"),
                        repeating: child.attr("Repeating"),
                        at: child.at,
                        ..FormDef::default()
                    };
                    while let Some((name, r)) = self.child(child.depth)? {
                        if name == "ItemGroupRef" {
                            form.groups.push(self.reference(&r, "ItemGroupOID")?);
                        } else {
                            self.pass(&Passed::Odm(name))?;
                        }
                    }
                    mdv.forms.push(form);
                }
                "ItemGroupDef" => {
                    self.keep(&child)?;
                    let mut group = GroupDef {
                        oid: child.oid("OID"),
                        name: child.attr("Name"),
                        repeating: child.attr("Repeating"),
                        at: child.at,
                        ..GroupDef::default()
                    };
                    while let Some((name, r)) = self.child(child.depth)? {
                        match name.as_str() {
                            "ItemRef" => group.items.push(self.reference(&r, "ItemOID")?),
                            "ItemGroupRef" => return Err(odm2(&r)),
                            _ => self.pass(&Passed::Odm(name))?,
                        }
                    }
                    mdv.groups.push(group);
                }
                "ItemDef" => {
                    let item = self.item(&child)?;
                    mdv.items.push(item);
                }
                "CodeList" => {
                    let list = self.code_list(&child)?;
                    mdv.code_lists.push(list);
                }
                "ConditionDef" | "MethodDef" => {
                    self.keep(&child)?;
                    let named = Named {
                        oid: child.oid("OID"),
                        name: child.attr("Name"),
                        at: child.at,
                    };
                    if name == "ConditionDef" {
                        mdv.conditions.push(named);
                    } else {
                        mdv.methods.push(named);
                    }
                    self.xml.skip()?;
                }
                _ => self.pass(&Passed::Odm(name))?,
            }
        }
        Ok(mdv)
    }

    /// A reference element (its children are read past).
    fn reference(&mut self, head: &Head, oid: &str) -> Result<Ref, MetadataError> {
        self.keep(head)?;
        let r = Ref {
            oid: head.oid(oid),
            mandatory: head.yes("Mandatory"),
            order: head.attr("OrderNumber"),
            condition: head.attr("CollectionExceptionConditionOID"),
            method: head
                .attr("MethodOID")
                .or_else(|| head.attr("ImputationMethodOID")),
            at: head.at,
        };
        self.xml.skip()?;
        Ok(r)
    }

    fn item(&mut self, head: &Head) -> Result<ItemDef, MetadataError> {
        let vendor = self.vendor_of(head)?;
        let mut item = ItemDef {
            oid: head.oid("OID"),
            name: head.attr("Name"),
            data_type: head.attr("DataType"),
            length: head.attr("Length"),
            significant_digits: head.attr("SignificantDigits"),
            vendor,
            at: head.at,
            ..ItemDef::default()
        };
        while let Some((name, child)) = self.child(head.depth)? {
            match name.as_str() {
                "Question" => item.question = self.translated(&child)?,
                "CodeListRef" => {
                    self.keep(&child)?;
                    item.code_list = child.attr("CodeListOID");
                    self.xml.skip()?;
                }
                "MeasurementUnitRef" => {
                    self.keep(&child)?;
                    item.units.push(child.oid("MeasurementUnitOID"));
                    self.xml.skip()?;
                }
                "RangeCheck" => {
                    let check = self.range_check(&child)?;
                    item.range_checks.push(check);
                }
                "" => {
                    let (ns, local) = self.xml.current();
                    let (ns, local) = (ns.to_string(), local.to_string());
                    if ns.contains("openclinica") && local == "ItemDetails" {
                        self.item_details(&child, &mut item.vendor_phi)?;
                    } else {
                        self.pass(&Passed::Vendor(ns))?;
                    }
                }
                _ => self.pass(&Passed::Odm(name))?,
            }
        }
        if item
            .vendor
            .iter()
            .any(|a| a.local.eq_ignore_ascii_case("PHI") && is_yes(&a.value))
        {
            item.vendor_phi.push("*".to_string());
        }
        Ok(item)
    }

    /// `OpenClinica:ItemDetails`: the forms whose `ItemPresentInForm` says `PHI="Yes"`.
    fn item_details(&mut self, head: &Head, phi: &mut Vec<String>) -> Result<(), MetadataError> {
        let (ns, _) = self.xml.current();
        count_ns(&mut self.md.skipped.extension_elements, ns, 1);
        while let Some((_, child)) = self.child(head.depth)? {
            let flagged = child
                .attrs
                .iter()
                .any(|(ns, l, v)| ns.is_empty() && l == "PHI" && is_yes(v));
            if flagged {
                let form = child.attr("FormOID").unwrap_or_else(|| "*".to_string());
                self.charge(form.len())?;
                phi.push(form);
            }
            self.xml.skip()?;
        }
        Ok(())
    }

    fn range_check(&mut self, head: &Head) -> Result<RangeCheck, MetadataError> {
        self.keep(head)?;
        let mut check = RangeCheck {
            comparator: head.attr("Comparator"),
            soft_hard: head.attr("SoftHard"),
            at: head.at,
            ..RangeCheck::default()
        };
        while let Some((name, child)) = self.child(head.depth)? {
            match name.as_str() {
                "CheckValue" => {
                    self.count_vendor(&child);
                    let value = self.text()?;
                    check.values.push(value);
                }
                "FormalExpression" => {
                    check.formal_expression = true;
                    self.pass(&Passed::Odm(name))?;
                }
                "MeasurementUnitRef" => {
                    self.keep(&child)?;
                    check.unit = child.attr("MeasurementUnitOID");
                    self.xml.skip()?;
                }
                "ErrorMessage" => check.message = self.translated(&child)?,
                _ => self.pass(&Passed::Odm(name))?,
            }
        }
        Ok(check)
    }

    fn code_list(&mut self, head: &Head) -> Result<CodeList, MetadataError> {
        self.keep(head)?;
        let mut list = CodeList {
            oid: head.oid("OID"),
            name: head.attr("Name"),
            data_type: head.attr("DataType"),
            at: head.at,
            ..CodeList::default()
        };
        while let Some((name, child)) = self.child(head.depth)? {
            match name.as_str() {
                "CodeListItem" | "EnumeratedItem" => {
                    self.keep(&child)?;
                    let mut item = CodeListItem {
                        code: child.attr_raw("CodedValue"),
                        decode: Text::default(),
                    };
                    while let Some((name, d)) = self.child(child.depth)? {
                        if name == "Decode" {
                            item.decode = self.translated(&d)?;
                        } else {
                            self.pass(&Passed::Odm(name))?;
                        }
                    }
                    list.items.push(item);
                }
                "ExternalCodeList" => {
                    self.keep(&child)?;
                    list.external = Some(child.attr("Dictionary").unwrap_or_default());
                    self.xml.skip()?;
                }
                _ => self.pass(&Passed::Odm(name))?,
            }
        }
        Ok(list)
    }
}

fn odm2(head: &Head) -> MetadataError {
    FileError {
        at: head.at,
        kind: Refusal::Odm2Structure,
    }
    .into()
}

fn is_yes(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "yes" | "y" | "true" | "1")
}
