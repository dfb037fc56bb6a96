//! Reading the schema out of a merged [`Tree`]: a serde `Deserializer` for the tree,
//! run once under `serde_path_to_error` so that an error names its key's path.
//!
//! Two rules beyond plain TOML:
//! - an environment variable's text ([`Tree::Text`]) is parsed as the type the schema
//!   asks for: a number, `true`/`false`, a string, or a list split at commas;
//! - a table read as an enum is tagged by its [`ENUM_TAG`] key (`kind`), the rest of
//!   the table being the variant's keys; without the tag it is the enum's first variant.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, Unexpected,
    VariantAccess, Visitor,
};
use serde::forward_to_deserialize_any;
use serde_path_to_error::Segment;

use super::tree::Tree;

/// The key naming a tagged table's variant.
pub(super) const ENUM_TAG: &str = "kind";

/// A tree that does not fit the schema. `field` is the key's path as the file writes
/// it (`seeds[1].addr`, `backend.dir`); nothing was built.
#[derive(Debug)]
pub(super) struct SchemaError {
    pub field: String,
    pub reason: String,
}

/// Deserializes `T` from `tree`.
pub(super) fn from_tree<T: DeserializeOwned>(tree: Tree) -> Result<T, SchemaError> {
    serde_path_to_error::deserialize(tree).map_err(|error| {
        let mut field = String::new();
        // The enum variant directly holding the last key, if any.
        let mut pending_variant = None;
        let mut variant = None;
        for segment in error.path() {
            match segment {
                Segment::Map { key } => {
                    variant = pending_variant.take();
                    push_key(&mut field, key);
                }
                Segment::Seq { index } => {
                    pending_variant = None;
                    field.push_str(&format!("[{index}]"));
                }
                Segment::Enum { variant } => pending_variant = Some(variant.clone()),
                Segment::Unknown => {}
            }
        }
        let inner = error.into_inner();
        if let Some(key) = inner.key {
            variant = pending_variant;
            push_key(&mut field, key);
        }
        let reason = match variant {
            Some(kind) if inner.unknown_key => {
                format!("{} (for {ENUM_TAG} = {kind:?})", inner.message)
            }
            _ => inner.message,
        };
        SchemaError { field, reason }
    })
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

/// The keys serde lists for a struct `T`: what its derived `Deserialize` passes to
/// `deserialize_struct`. Nothing is deserialized.
pub(super) fn struct_keys<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut keys: &'static [&'static str] = &[];
    // Always an error: the recorder stops at the struct's key list.
    let _stopped = T::deserialize(KeyRecorder { keys: &mut keys });
    keys
}

struct KeyRecorder<'a> {
    keys: &'a mut &'static [&'static str],
}

impl<'de> de::Deserializer<'de> for KeyRecorder<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, DeError> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, DeError> {
        *self.keys = fields;
        Err(de::Error::custom("keys recorded"))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

/// Why a value does not fit. `key` is a key below the error's path that the error is
/// about: a missing key, or a tagged table's `kind`.
#[derive(Debug)]
pub(super) struct DeError {
    key: Option<&'static str>,
    unknown_key: bool,
    message: String,
}

impl DeError {
    fn under(mut self, key: &'static str) -> Self {
        self.key = Some(key);
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self {
            key: None,
            unknown_key: false,
            message: message.to_string(),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self {
            key: Some(field),
            unknown_key: false,
            message: "missing: this key is required".to_owned(),
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self {
            key: None,
            unknown_key: true,
            message: format!(
                "unknown key `{field}`; the keys here are {}",
                expected.join(", ")
            ),
        }
    }
}

impl IntoDeserializer<'_, DeError> for Tree {
    type Deserializer = Tree;

    fn into_deserializer(self) -> Tree {
        self
    }
}

/// Scalar requests: an environment variable's text is parsed as the type asked for.
macro_rules! parse_text {
    ($($method:ident => $visit:ident($ty:ty),)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            match self {
                Tree::Text(text) => match text.trim().parse::<$ty>() {
                    Ok(value) => visitor.$visit(value),
                    Err(_) => Err(de::Error::invalid_value(Unexpected::Str(&text), &visitor)),
                },
                other => other.deserialize_any(visitor),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Tree {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self {
            Tree::Table(table) => visit_table(table, visitor),
            Tree::Array(items) => visit_items(items, visitor),
            Tree::Bool(b) => visitor.visit_bool(b),
            Tree::Int(i) => visitor.visit_i64(i),
            Tree::Float(f) => visitor.visit_f64(f),
            Tree::Str(s) | Tree::Text(s) => visitor.visit_string(s),
        }
    }

    parse_text! {
        deserialize_bool => visit_bool(bool),
        deserialize_i8 => visit_i8(i8),
        deserialize_i16 => visit_i16(i16),
        deserialize_i32 => visit_i32(i32),
        deserialize_i64 => visit_i64(i64),
        deserialize_u8 => visit_u8(u8),
        deserialize_u16 => visit_u16(u16),
        deserialize_u32 => visit_u32(u32),
        deserialize_u64 => visit_u64(u64),
        deserialize_f32 => visit_f32(f32),
        deserialize_f64 => visit_f64(f64),
    }

    /// A key that is present is `Some`; an absent one never reaches here.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self {
            Tree::Text(text) => {
                let items = text
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| Tree::Text(item.to_owned()))
                    .collect();
                visit_items(items, visitor)
            }
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self {
            Tree::Str(s) | Tree::Text(s) => visitor.visit_enum(s.into_deserializer()),
            Tree::Table(mut table) => {
                let first = variants.first().copied().unwrap_or_default();
                let tag = table
                    .remove(ENUM_TAG)
                    .unwrap_or_else(|| Tree::Str(first.to_owned()));
                visitor.visit_enum(Tagged { tag, body: table })
            }
            other => other.deserialize_any(visitor),
        }
    }

    forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct tuple tuple_struct map
        struct identifier ignored_any
    }
}

fn visit_table<'de, V: Visitor<'de>>(
    table: BTreeMap<String, Tree>,
    visitor: V,
) -> Result<V::Value, DeError> {
    let mut map = MapDeserializer::new(table.into_iter());
    let value = visitor.visit_map(&mut map)?;
    map.end()?;
    Ok(value)
}

fn visit_items<'de, V: Visitor<'de>>(items: Vec<Tree>, visitor: V) -> Result<V::Value, DeError> {
    let mut seq = SeqDeserializer::new(items.into_iter());
    let value = visitor.visit_seq(&mut seq)?;
    seq.end()?;
    Ok(value)
}

/// A table read as an enum: its tag names the variant, the rest is the variant's body.
struct Tagged {
    tag: Tree,
    body: BTreeMap<String, Tree>,
}

impl<'de> EnumAccess<'de> for Tagged {
    type Error = DeError;
    type Variant = TaggedBody;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, TaggedBody), DeError> {
        let variant = seed.deserialize(self.tag).map_err(|e| e.under(ENUM_TAG))?;
        Ok((variant, TaggedBody(self.body)))
    }
}

struct TaggedBody(BTreeMap<String, Tree>);

impl<'de> VariantAccess<'de> for TaggedBody {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(key) => Err(de::Error::custom(format!(
                "unknown key `{key}`: this {ENUM_TAG} takes no other keys"
            ))),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, DeError> {
        seed.deserialize(Tree::Table(self.0))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(Tree::Table(self.0), visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(Tree::Table(self.0), visitor)
    }
}
