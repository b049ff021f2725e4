//! Streaming over a JSON body without building a `serde_json::Value`.
//!
//! Every reader here accepts any JSON value: what is wrong with a value
//! becomes an [`ApiError`] in the reader's output, never a deserializer error.
//! So the only errors serde_json reports are syntax errors, which make the
//! whole request malformed, exactly as parsing into a `Value` first did.
//!
//! Values nobody reads are consumed by [`Skip`], which goes through
//! `deserialize_any` like `Value` does. `serde::de::IgnoredAny` is not used on
//! purpose: serde_json skips it with a faster scanner that neither applies the
//! nesting limit nor checks number ranges and `\u` surrogates, so it would
//! accept bodies the API has always refused as malformed.

use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::ApiError;

/// A JSON value as far as a reader needs to know it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    Null,
    /// A number that is an integer within `i64`.
    Integer(i64),
    /// Any other number: a fraction, or an integer beyond `i64`.
    Number,
    Str(&'a str),
    /// A boolean, or an array or object the reader did not ask to walk.
    Other,
}

/// What to make of one JSON value. Arrays and objects are skipped and judged
/// as [`Scalar::Other`] unless the reader walks them itself.
pub trait Reader<'de>: Sized {
    type Value;

    /// Judges a value that is not walked.
    fn scalar(self, value: Scalar<'_>) -> Self::Value;

    /// Walks an object; by default it is skipped.
    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(self.scalar(Scalar::Other))
    }

    /// Walks an array; by default it is skipped.
    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(self.scalar(Scalar::Other))
    }
}

/// A reader that only looks at scalars, as a closure.
pub struct Scalars<F>(pub F);

impl<'de, T, F: FnOnce(Scalar<'_>) -> T> Reader<'de> for Scalars<F> {
    type Value = T;

    fn scalar(self, value: Scalar<'_>) -> T {
        (self.0)(value)
    }
}

/// Any JSON value, consumed and forgotten.
pub struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Read(Scalars(|_: Scalar<'_>| Skip)).deserialize(deserializer)
    }
}

/// Runs a [`Reader`] on the next value of a deserializer.
pub struct Read<R>(pub R);

impl<'de, R: Reader<'de>> DeserializeSeed<'de> for Read<R> {
    type Value = R::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<R::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, R: Reader<'de>> Visitor<'de> for Read<R> {
    type Value = R::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<R::Value, E> {
        Ok(self.0.scalar(Scalar::Null))
    }

    fn visit_none<E>(self) -> Result<R::Value, E> {
        Ok(self.0.scalar(Scalar::Null))
    }

    fn visit_bool<E>(self, _: bool) -> Result<R::Value, E> {
        Ok(self.0.scalar(Scalar::Other))
    }

    fn visit_i64<E>(self, v: i64) -> Result<R::Value, E> {
        Ok(self.0.scalar(Scalar::Integer(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<R::Value, E> {
        Ok(self
            .0
            .scalar(i64::try_from(v).map_or(Scalar::Number, Scalar::Integer)))
    }

    fn visit_f64<E>(self, _: f64) -> Result<R::Value, E> {
        Ok(self.0.scalar(Scalar::Number))
    }

    // `visit_borrowed_str` and `visit_string` forward here: readers compare
    // or parse the text at once and keep nothing, so valid values never
    // allocate whether or not serde_json could borrow them.
    fn visit_str<E>(self, v: &str) -> Result<R::Value, E> {
        Ok(self.0.scalar(Scalar::Str(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<R::Value, A::Error> {
        self.0.seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<R::Value, A::Error> {
        self.0.map(map)
    }
}

/// Reads a whole body with `reader`: a syntax error anywhere, or anything
/// after the value, makes the request malformed.
pub fn read_body<'de, R: Reader<'de>>(body: &'de [u8], reader: R) -> Result<R::Value, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = Read(reader)
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
}
