//! What can be known offline of the types of a call's arguments.
//!
//! Overloads share a name, so a call is resolved by name and argument count
//! first; when several overloads accept the count, the argument types decide
//! (issue 15: `d($1::text)` calls `d(text)`, not `d(anyelement)`). Without a
//! catalog only a few argument shapes have a type that is certain: a cast
//! (`x::text`, `CAST(x AS text)`), an integer, numeric or boolean constant,
//! and a reference to one of the caller's own parameters (`$1`, or its name).
//! Everything else — a string literal, another call's result, a column — is
//! unknown, and a call with an unknown argument stays a name match.
//!
//! The types are read while the call walk (`walk.rs`) passes the call's
//! `args`, with a serializer that looks only at the top of each argument:
//! the kind of node, and for the three kinds above, that node alone.

use serde::ser::{self, Impossible, Serialize};
use serde_json::Value;

use super::read::TypeKey;
use super::walk::WalkError;

/// The type of one argument, as far as it is known without a catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ArgType {
    Known(TypeKey),
    /// `$n`: the caller's n-th (1-based) identity parameter.
    Param(usize),
    /// A bare name: the caller's parameter of that name, if it has one.
    Named(String),
    Unknown,
}

/// Reads a `FuncCall`'s `args` (a list of nodes, or none).
pub(super) fn arg_types<T: Serialize + ?Sized>(args: &T) -> Result<Vec<ArgType>, WalkError> {
    args.serialize(ArgList)
}

struct ArgList;

struct ArgListItems(Vec<ArgType>);

impl ser::SerializeSeq for ArgListItems {
    type Ok = Vec<ArgType>;
    type Error = WalkError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WalkError> {
        // An argument whose shape is not the expected one is unknown, never
        // an error: it only makes the call a name match.
        self.0
            .push(value.serialize(ArgKind).unwrap_or(ArgType::Unknown));
        Ok(())
    }
    fn end(self) -> Result<Vec<ArgType>, WalkError> {
        Ok(self.0)
    }
}

fn not_a_list<T>() -> Result<T, WalkError> {
    Err(ser::Error::custom("a FuncCall's args is not a list"))
}

/// Trivial methods of a serializer that has nothing to say about a value.
macro_rules! scalars {
    ($answer:expr) => {
        fn serialize_bool(self, _: bool) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_i8(self, _: i8) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_i16(self, _: i16) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_i32(self, _: i32) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_i64(self, _: i64) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_u8(self, _: u8) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_u16(self, _: u16) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_u32(self, _: u32) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_u64(self, _: u64) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_f32(self, _: f32) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_f64(self, _: f64) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_char(self, _: char) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_str(self, _: &str) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_bytes(self, _: &[u8]) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_unit(self) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_unit_struct(self, _: &'static str) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_unit_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
        ) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: &T,
        ) -> Result<Self::Ok, WalkError> {
            $answer
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, WalkError> {
            not_a_list()
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, WalkError> {
            not_a_list()
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, WalkError> {
            not_a_list()
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, WalkError> {
            not_a_list()
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, WalkError> {
            not_a_list()
        }
    };
}

#[rustfmt::skip]
impl ser::Serializer for ArgList {
    type Ok = Vec<ArgType>;
    type Error = WalkError;
    type SerializeSeq = ArgListItems;
    type SerializeTuple = Impossible<Vec<ArgType>, WalkError>;
    type SerializeTupleStruct = Impossible<Vec<ArgType>, WalkError>;
    type SerializeTupleVariant = Impossible<Vec<ArgType>, WalkError>;
    type SerializeMap = Impossible<Vec<ArgType>, WalkError>;
    type SerializeStruct = Impossible<Vec<ArgType>, WalkError>;
    type SerializeStructVariant = Impossible<Vec<ArgType>, WalkError>;

    scalars!(not_a_list());
    fn serialize_seq(self, len: Option<usize>) -> Result<ArgListItems, WalkError> {
        Ok(ArgListItems(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_none(self) -> Result<Vec<ArgType>, WalkError> {
        Ok(Vec::new())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<ArgType>, WalkError> {
        value.serialize(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, WalkError> {
        not_a_list()
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(self, _: &'static str, _: u32, _: &'static str, _: &T) -> Result<Vec<ArgType>, WalkError> {
        not_a_list()
    }
}

/// One argument: a `Node` struct whose `node` field is the variant that
/// names the kind of expression.
struct ArgKind;

struct NodeFields(ArgType);

impl ser::SerializeStruct for NodeFields {
    type Ok = ArgType;
    type Error = WalkError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), WalkError> {
        if key == "node" {
            self.0 = value.serialize(ArgKind)?;
        }
        Ok(())
    }
    fn end(self) -> Result<ArgType, WalkError> {
        Ok(self.0)
    }
}

#[rustfmt::skip]
impl ser::Serializer for ArgKind {
    type Ok = ArgType;
    type Error = WalkError;
    type SerializeSeq = Impossible<ArgType, WalkError>;
    type SerializeTuple = Impossible<ArgType, WalkError>;
    type SerializeTupleStruct = Impossible<ArgType, WalkError>;
    type SerializeTupleVariant = Impossible<ArgType, WalkError>;
    type SerializeMap = Impossible<ArgType, WalkError>;
    type SerializeStruct = NodeFields;
    type SerializeStructVariant = Impossible<ArgType, WalkError>;

    scalars!(Ok(ArgType::Unknown));
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, WalkError> {
        not_a_list()
    }
    fn serialize_none(self) -> Result<ArgType, WalkError> {
        Ok(ArgType::Unknown)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<ArgType, WalkError> {
        value.serialize(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<NodeFields, WalkError> {
        Ok(NodeFields(ArgType::Unknown))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(self, _: &'static str, _: u32, variant: &'static str, value: &T) -> Result<ArgType, WalkError> {
        // Only these nodes are turned into JSON, and they are small: a cast
        // carries its operand, but a call's arguments are few.
        let json = || serde_json::to_value(value).map_err(ser::Error::custom);
        Ok(match variant {
            "TypeCast" => cast_type(&json()?),
            "AConst" => constant_type(&json()?),
            "ParamRef" => json()?
                .get("number")
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
                .map_or(ArgType::Unknown, ArgType::Param),
            "ColumnRef" => column_name(&json()?),
            _ => ArgType::Unknown,
        })
    }
}

fn cast_type(cast: &Value) -> ArgType {
    let Some(type_name) = cast.get("type_name") else {
        return ArgType::Unknown;
    };
    let names: Option<Vec<String>> = type_name
        .get("names")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .map(|n| n.pointer("/node/String/sval")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or(None);
    let Some(mut names) = names.filter(|names| !names.is_empty()) else {
        return ArgType::Unknown;
    };
    if names.len() > 1 && names[0] == "pg_catalog" {
        names.remove(0);
    }
    ArgType::Known(TypeKey {
        names,
        array_dimensions: type_name
            .get("array_bounds")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
        percent_type: type_name
            .get("pct_type")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// An integer is `int4` (PostgreSQL reads larger ones as `int8` or
/// `numeric`: unknown here), a decimal `numeric`, `true`/`false` `bool`.
/// A quoted string is of unknown type until resolution: unknown.
fn constant_type(constant: &Value) -> ArgType {
    let val = constant.get("val").filter(|v| !v.is_null());
    let name = match val.and_then(Value::as_object).and_then(|v| v.keys().next()) {
        Some(kind) if kind == "Ival" => "int4",
        // A Float node is also an integer too large for int4.
        Some(kind) if kind == "Fval" && val.is_some_and(is_decimal) => "numeric",
        Some(kind) if kind == "Boolval" => "bool",
        _ => return ArgType::Unknown,
    };
    ArgType::Known(TypeKey {
        names: vec![name.to_owned()],
        array_dimensions: 0,
        percent_type: false,
    })
}

fn is_decimal(val: &Value) -> bool {
    val.pointer("/Fval/fval")
        .and_then(Value::as_str)
        .is_some_and(|text| text.contains(['.', 'e', 'E']))
}

fn column_name(column: &Value) -> ArgType {
    match column
        .get("fields")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        Some([field]) => field
            .pointer("/node/String/sval")
            .and_then(Value::as_str)
            .map_or(ArgType::Unknown, |name| ArgType::Named(name.to_owned())),
        _ => ArgType::Unknown,
    }
}
