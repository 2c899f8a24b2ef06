//! Why one form instance is refused (the rest of the file goes on), and the two kinds of error
//! the ClinicalData reader yields.
//!
//! A reason names the form and the item by where they start (line and column) and by their OID
//! shown through [`Printable`]: escaped and cut to a bounded length, since an OID comes from the
//! file. OIDs are the names the protocol defines; a reason never holds a value, a key or free text.

use std::fmt;

use crate::odm::model::Position;
use crate::odm::xml::FileError;
use crate::printable::Printable;

/// What makes a form instance unusable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormProblem {
    /// A binary item (`ItemDataBase64Binary`, `ItemDataHexBinary`, hex or base64 floats, or an
    /// ItemData whose DataType is one of them): its content is never read nor kept.
    BinaryItem { item_oid: String, at: Position },
    /// A required attribute is missing or empty (`FormData/@FormOID`, `SubjectData/@SubjectKey`,
    /// ...), on the form or on the element around it.
    MissingAttribute {
        element: &'static str,
        attribute: &'static str,
        at: Position,
    },
    /// A TransactionType other than Insert, Update, Remove, Upsert, Context.
    BadTransactionType { element: &'static str, at: Position },
    /// An IsNull other than Yes and No.
    BadIsNull { at: Position },
    /// `IsNull="Yes"` with a value.
    NullWithValue { at: Position },
    /// More than one value for one item (`Value=` and `<Value>`, or several `<Value>`).
    SeveralValues { at: Position },
    /// ItemGroupData inside ItemGroupData (the ODM 2.0 structure).
    NestedGroup { at: Position },
    /// An item directly under FormData, outside any item group.
    ItemOutsideGroup { at: Position },
    /// More items than `odm.max_form_items`.
    TooManyItems { cap: usize },
    /// Items holding more than `odm.max_form_bytes` in memory.
    TooLarge { cap: usize },
}

impl FormProblem {
    /// A short stable name, for counting refusals by reason.
    pub fn code(&self) -> &'static str {
        match self {
            FormProblem::BinaryItem { .. } => "binary_item",
            FormProblem::MissingAttribute { .. } => "missing_attribute",
            FormProblem::BadTransactionType { .. } => "bad_transaction_type",
            FormProblem::BadIsNull { .. } => "bad_is_null",
            FormProblem::NullWithValue { .. } => "null_with_value",
            FormProblem::SeveralValues { .. } => "several_values",
            FormProblem::NestedGroup { .. } => "nested_group",
            FormProblem::ItemOutsideGroup { .. } => "item_outside_group",
            FormProblem::TooManyItems { .. } => "too_many_items",
            FormProblem::TooLarge { .. } => "too_large",
        }
    }
}

impl fmt::Display for FormProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormProblem::BinaryItem { item_oid, at } => write!(
                f,
                "the item at {at} (ItemOID {:?}) is binary (hex or base64): binary items are not accepted",
                Printable(item_oid)
            ),
            FormProblem::MissingAttribute {
                element,
                attribute,
                at,
            } => write!(f, "{element} at {at} has no {attribute}"),
            FormProblem::BadTransactionType { element, at } => write!(
                f,
                "{element} at {at} has a TransactionType other than Insert, Update, Remove, Upsert, Context"
            ),
            FormProblem::BadIsNull { at } => {
                write!(f, "the item at {at} has an IsNull other than Yes and No")
            }
            FormProblem::NullWithValue { at } => {
                write!(f, "the item at {at} is IsNull=\"Yes\" and has a value")
            }
            FormProblem::SeveralValues { at } => {
                write!(f, "the item at {at} has more than one value")
            }
            FormProblem::NestedGroup { at } => write!(
                f,
                "ItemGroupData at {at} is inside another ItemGroupData (the ODM 2.0 structure): not supported"
            ),
            FormProblem::ItemOutsideGroup { at } => write!(
                f,
                "the item at {at} is directly under FormData, outside any ItemGroupData"
            ),
            FormProblem::TooManyItems { cap } => {
                write!(f, "the form has more than {cap} items (odm.max_form_items)")
            }
            FormProblem::TooLarge { cap } => write!(
                f,
                "the form's values come to more than {cap} bytes (odm.max_form_bytes)"
            ),
        }
    }
}

/// One form instance refused: the file goes on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct FormError {
    /// `ClinicalData/@StudyOID` and `FormData/@FormOID` as given (None when absent); shown only
    /// through [`Printable`].
    pub study_oid: Option<String>,
    pub form_oid: Option<String>,
    /// The start of the FormData element.
    pub at: Position,
    pub problem: FormProblem,
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the form at {}", self.at)?;
        if let Some(oid) = &self.form_oid {
            write!(f, " (FormOID {:?})", Printable(oid))?;
        }
        write!(f, " is refused: {}", self.problem)
    }
}

/// What the ClinicalData reader yields besides form instances.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// This form instance is refused; the next one may be read.
    #[error(transparent)]
    Form(FormError),
    /// The whole file is refused; nothing more is read (the reader ends).
    #[error(transparent)]
    File(FileError),
}
