//! The SQLite side of the facade: values in and out of rusqlite.

use rusqlite::types::{ToSqlOutput, ValueRef};

use super::{Result, Value};

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Owned(rusqlite::types::Value::Null),
            Value::Int(number) => ToSqlOutput::Owned(rusqlite::types::Value::Integer(*number)),
            Value::Bool(flag) => {
                ToSqlOutput::Owned(rusqlite::types::Value::Integer(i64::from(*flag)))
            }
            Value::Real(real) => ToSqlOutput::Owned(rusqlite::types::Value::Real(*real)),
            Value::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Value::Bytes(bytes) => ToSqlOutput::Borrowed(ValueRef::Blob(bytes)),
        })
    }
}

pub(super) fn params(values: &[Value]) -> rusqlite::ParamsFromIter<std::slice::Iter<'_, Value>> {
    rusqlite::params_from_iter(values.iter())
}

/// A row's values, copied out of rusqlite's row.
pub(super) fn values(row: &rusqlite::Row<'_>) -> Result<Vec<Value>> {
    let count = row.as_ref().column_count();
    let mut values = Vec::with_capacity(count);
    for column in 0..count {
        values.push(match row.get_ref(column)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(number) => Value::Int(number),
            ValueRef::Real(real) => Value::Real(real),
            ValueRef::Text(text) => Value::Text(String::from_utf8_lossy(text).into_owned()),
            ValueRef::Blob(bytes) => Value::Bytes(bytes.to_vec()),
        });
    }
    Ok(values)
}
