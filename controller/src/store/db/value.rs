//! The values the store binds and reads, the same on both backends.
//!
//! SQLite's INTEGER is PostgreSQL's BIGINT here, BLOB is BYTEA, and a flag
//! is an integer 0/1 on SQLite and may be a BOOLEAN on PostgreSQL: a bool
//! reads from either, so the store's Rust never asks which.

/// A parameter or a column's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Value {
    /// What it holds, for a type error's message.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Bool(_) => "a boolean",
            Value::Real(_) => "a real",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
        }
    }
}

/// What can be bound as a parameter.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Bytes(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Bytes(self.clone())
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}

macro_rules! integer_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(i64::from(*self))
            }
        }
    )*};
}
integer_to_value!(i64, i32, u32, u16, u8, i16);

/// Counters kept in u64/usize never reach i64's end; one that did is
/// clamped rather than wrapped negative.
impl ToValue for u64 {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToValue for usize {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

/// What a column can be read as; `Err` names the type wanted.
pub trait FromValue: Sized {
    fn from_value(value: &Value) -> Result<Self, &'static str>;
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

impl FromValue for Value {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        Ok(value.clone())
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Text(text) => Ok(text.clone()),
            _ => Err("text"),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Bytes(bytes) => Ok(bytes.clone()),
            _ => Err("bytes"),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Bool(flag) => Ok(*flag),
            Value::Int(number) => Ok(*number != 0),
            _ => Err("a boolean"),
        }
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Real(real) => Ok(*real),
            Value::Int(number) => Ok(*number as f64),
            _ => Err("a real"),
        }
    }
}

macro_rules! integer_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: &Value) -> Result<Self, &'static str> {
                match value {
                    Value::Int(number) => <$t>::try_from(*number).map_err(|_| stringify!($t)),
                    Value::Bool(flag) => Ok(<$t>::from(*flag)),
                    _ => Err(stringify!($t)),
                }
            }
        }
    )*};
}
integer_from_value!(i64, i32, u32, u64, usize, u16, u8, i16);
