//! The ODM 1.3 typed item forms (`ItemDataInteger>12<` ...): which element, which DataType, and
//! which are binary (never read, never kept).

/// The ODM 1.3 typed item forms (`ItemDataInteger` ...), by their DataType.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TypedAs {
    Any,
    String,
    Integer,
    Float,
    Double,
    Date,
    Time,
    Datetime,
    Boolean,
    PartialDate,
    PartialTime,
    PartialDatetime,
    IncompleteDate,
    IncompleteTime,
    IncompleteDatetime,
    DurationDatetime,
    IntervalDatetime,
    Uri,
    HexBinary,
    Base64Binary,
    HexFloat,
    Base64Float,
}

/// Every typed form, with the suffix of its element name (`ItemData` + suffix) and its DataType.
const TYPED: [(TypedAs, &str, &str); 22] = [
    (TypedAs::Any, "Any", "any"),
    (TypedAs::String, "String", "string"),
    (TypedAs::Integer, "Integer", "integer"),
    (TypedAs::Float, "Float", "float"),
    (TypedAs::Double, "Double", "double"),
    (TypedAs::Date, "Date", "date"),
    (TypedAs::Time, "Time", "time"),
    (TypedAs::Datetime, "Datetime", "datetime"),
    (TypedAs::Boolean, "Boolean", "boolean"),
    (TypedAs::PartialDate, "PartialDate", "partialDate"),
    (TypedAs::PartialTime, "PartialTime", "partialTime"),
    (
        TypedAs::PartialDatetime,
        "PartialDatetime",
        "partialDatetime",
    ),
    (TypedAs::IncompleteDate, "IncompleteDate", "incompleteDate"),
    (TypedAs::IncompleteTime, "IncompleteTime", "incompleteTime"),
    (
        TypedAs::IncompleteDatetime,
        "IncompleteDatetime",
        "incompleteDatetime",
    ),
    (
        TypedAs::DurationDatetime,
        "DurationDatetime",
        "durationDatetime",
    ),
    (
        TypedAs::IntervalDatetime,
        "IntervalDatetime",
        "intervalDatetime",
    ),
    (TypedAs::Uri, "URI", "URI"),
    (TypedAs::HexBinary, "HexBinary", "hexBinary"),
    (TypedAs::Base64Binary, "Base64Binary", "base64Binary"),
    (TypedAs::HexFloat, "HexFloat", "hexFloat"),
    (TypedAs::Base64Float, "Base64Float", "base64Float"),
];

impl TypedAs {
    /// The form of an element's local name (`ItemDataInteger` -> Integer); None for anything else,
    /// `ItemData` itself included.
    pub fn from_element(local: &str) -> Option<TypedAs> {
        let suffix = local.strip_prefix("ItemData")?;
        TYPED.iter().find(|t| t.1 == suffix).map(|t| t.0)
    }

    /// An ODM DataType name (`partialDate`); None for one ODM does not define.
    pub fn from_data_type(data_type: &str) -> Option<TypedAs> {
        TYPED.iter().find(|t| t.2 == data_type).map(|t| t.0)
    }

    /// The element's local name (`ItemDataInteger`).
    pub fn element(self) -> &'static str {
        match self {
            TypedAs::Any => "ItemDataAny",
            TypedAs::String => "ItemDataString",
            TypedAs::Integer => "ItemDataInteger",
            TypedAs::Float => "ItemDataFloat",
            TypedAs::Double => "ItemDataDouble",
            TypedAs::Date => "ItemDataDate",
            TypedAs::Time => "ItemDataTime",
            TypedAs::Datetime => "ItemDataDatetime",
            TypedAs::Boolean => "ItemDataBoolean",
            TypedAs::PartialDate => "ItemDataPartialDate",
            TypedAs::PartialTime => "ItemDataPartialTime",
            TypedAs::PartialDatetime => "ItemDataPartialDatetime",
            TypedAs::IncompleteDate => "ItemDataIncompleteDate",
            TypedAs::IncompleteTime => "ItemDataIncompleteTime",
            TypedAs::IncompleteDatetime => "ItemDataIncompleteDatetime",
            TypedAs::DurationDatetime => "ItemDataDurationDatetime",
            TypedAs::IntervalDatetime => "ItemDataIntervalDatetime",
            TypedAs::Uri => "ItemDataURI",
            TypedAs::HexBinary => "ItemDataHexBinary",
            TypedAs::Base64Binary => "ItemDataBase64Binary",
            TypedAs::HexFloat => "ItemDataHexFloat",
            TypedAs::Base64Float => "ItemDataBase64Float",
        }
    }

    /// Binary content (hex or base64, floats so encoded included): never read, never stored; a
    /// form holding one is refused.
    pub fn is_binary(self) -> bool {
        matches!(
            self,
            TypedAs::HexBinary | TypedAs::Base64Binary | TypedAs::HexFloat | TypedAs::Base64Float
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_forms_map_both_ways_and_binary_kinds_are_flagged() {
        for (typed, suffix, data_type) in TYPED {
            assert_eq!(typed.element(), format!("ItemData{suffix}"));
            assert_eq!(TypedAs::from_element(typed.element()), Some(typed));
            assert_eq!(TypedAs::from_data_type(data_type), Some(typed));
        }
        assert_eq!(TypedAs::from_element("ItemData"), None);
        assert_eq!(TypedAs::from_element("ItemDataText"), None);
        let binary: Vec<_> = TYPED
            .iter()
            .filter(|t| t.0.is_binary())
            .map(|t| t.2)
            .collect();
        assert_eq!(
            binary,
            ["hexBinary", "base64Binary", "hexFloat", "base64Float"]
        );
    }
}
