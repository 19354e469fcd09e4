//! Finding every `FuncCall` of a parse tree by walking its serde form
//! directly, without building a `serde_json::Value` of the whole tree first.
//!
//! Walking the serde form keeps the guarantee that no node type can be
//! missed (every field of every node is visited, whatever its type), as the
//! JSON walk did; skipping the intermediate JSON halves the cost of reading
//! calls, which both the CLI and the controller (it re-derives the order of
//! every batch) pay for each routine. A `FuncCall` is recognised by its
//! struct name, which is how it is serialised both as a `Node` and as a
//! `CallStmt`'s `funccall`.

use std::fmt;

use serde::ser::{self, Serialize};
use serde_json::Value;

use super::arg_types::{arg_types, ArgType};
use super::read::call_of;
use super::read::Call;
use super::DependencyReason;

/// Adds every call found in `tree` to `out`.
pub(super) fn collect_calls<T: Serialize + ?Sized>(
    tree: &T,
    reason: DependencyReason,
    out: &mut Vec<Call>,
) -> Result<(), String> {
    tree.serialize(Finder { reason, out })
        .map_err(|error| error.0)
}

#[derive(Debug)]
pub(super) struct WalkError(pub(super) String);

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WalkError {}

impl ser::Error for WalkError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        WalkError(message.to_string())
    }
}

/// Visits a value, looking for `FuncCall` structs at any depth.
struct Finder<'a> {
    reason: DependencyReason,
    out: &'a mut Vec<Call>,
}

/// Visits the items of a sequence, map, tuple or variant.
struct Items<'a> {
    reason: DependencyReason,
    out: &'a mut Vec<Call>,
}

impl Items<'_> {
    fn visit<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WalkError> {
        value.serialize(Finder {
            reason: self.reason,
            out: self.out,
        })
    }
}

/// Visits a struct's fields; for a `FuncCall`, also keeps its name and what is
/// known of its arguments' types to record the call at the end.
struct Fields<'a> {
    items: Items<'a>,
    func_call: Option<(Value, Vec<ArgType>)>,
}

impl<'a> ser::Serializer for Finder<'a> {
    type Ok = ();
    type Error = WalkError;
    type SerializeSeq = Items<'a>;
    type SerializeTuple = Items<'a>;
    type SerializeTupleStruct = Items<'a>;
    type SerializeTupleVariant = Items<'a>;
    type SerializeMap = Items<'a>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = Items<'a>;

    fn serialize_bool(self, _: bool) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_char(self, _: char) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_none(self) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), WalkError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), WalkError> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), WalkError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), WalkError> {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Items<'a>, WalkError> {
        Ok(self.items())
    }
    fn serialize_tuple(self, _: usize) -> Result<Items<'a>, WalkError> {
        Ok(self.items())
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Items<'a>, WalkError> {
        Ok(self.items())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Items<'a>, WalkError> {
        Ok(self.items())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Items<'a>, WalkError> {
        Ok(self.items())
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Fields<'a>, WalkError> {
        Ok(Fields {
            func_call: (name == "FuncCall").then_some((Value::Null, Vec::new())),
            items: self.items(),
        })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Items<'a>, WalkError> {
        Ok(self.items())
    }
}

impl<'a> Finder<'a> {
    fn items(self) -> Items<'a> {
        Items {
            reason: self.reason,
            out: self.out,
        }
    }
}

impl ser::SerializeSeq for Items<'_> {
    type Ok = ();
    type Error = WalkError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WalkError> {
        self.visit(value)
    }
    fn end(self) -> Result<(), WalkError> {
        Ok(())
    }
}

impl ser::SerializeTuple for Items<'_> {
    type Ok = ();
    type Error = WalkError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WalkError> {
        self.visit(value)
    }
    fn end(self) -> Result<(), WalkError> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Items<'_> {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WalkError> {
        self.visit(value)
    }
    fn end(self) -> Result<(), WalkError> {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Items<'_> {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WalkError> {
        self.visit(value)
    }
    fn end(self) -> Result<(), WalkError> {
        Ok(())
    }
}

impl ser::SerializeMap for Items<'_> {
    type Ok = ();
    type Error = WalkError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), WalkError> {
        self.visit(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WalkError> {
        self.visit(value)
    }
    fn end(self) -> Result<(), WalkError> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Items<'_> {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), WalkError> {
        self.visit(value)
    }
    fn end(self) -> Result<(), WalkError> {
        Ok(())
    }
}

impl ser::SerializeStruct for Fields<'_> {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), WalkError> {
        if let Some((name, arguments)) = &mut self.func_call {
            match key {
                // A name is one to three `String` nodes: cheap as JSON.
                "funcname" => {
                    *name =
                        serde_json::to_value(value).map_err(|error| WalkError(error.to_string()))?
                }
                "args" => *arguments = arg_types(value)?,
                _ => {}
            }
        }
        self.items.visit(value)
    }
    fn end(self) -> Result<(), WalkError> {
        if let Some((funcname, arguments)) = self.func_call {
            self.items
                .out
                .extend(call_of(&funcname, arguments, self.items.reason));
        }
        Ok(())
    }
}
