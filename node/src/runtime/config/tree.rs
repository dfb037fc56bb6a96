//! The layered value tree: the preset, the file and the environment, each read into a
//! [`Tree`] and merged key by key, upper layers winning.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

/// A configuration value from one layer, or from several merged.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tree {
    Table(BTreeMap<String, Tree>),
    Array(Vec<Tree>),
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A TOML string (a datetime is kept as its text).
    Str(String),
    /// An environment variable's value: read as the schema asks for it, a number,
    /// `true`/`false`, a string, or a comma-separated list (see `de`).
    Text(String),
}

impl Tree {
    pub(super) fn empty() -> Self {
        Tree::Table(BTreeMap::new())
    }

    /// `leaf` at `path`, inside one table per key.
    pub(super) fn nested(path: &[String], leaf: Tree) -> Self {
        path.iter().rev().fold(leaf, |inner, key| {
            Tree::Table(BTreeMap::from([(key.clone(), inner)]))
        })
    }

    /// The value of a table's `key`.
    pub(super) fn get(&self, key: &str) -> Option<&Tree> {
        match self {
            Tree::Table(table) => table.get(key),
            _ => None,
        }
    }

    /// Lays `upper` over `self`: tables merge key by key, anything else replaces (a
    /// list is replaced whole, never appended to).
    pub(super) fn merge(&mut self, upper: Tree) {
        match (self, upper) {
            (Tree::Table(lower), Tree::Table(upper)) => {
                for (key, value) in upper {
                    match lower.entry(key) {
                        Entry::Occupied(mut entry) => entry.get_mut().merge(value),
                        Entry::Vacant(entry) => {
                            entry.insert(value);
                        }
                    }
                }
            }
            (lower, upper) => *lower = upper,
        }
    }
}

impl From<toml::Value> for Tree {
    fn from(value: toml::Value) -> Self {
        match value {
            toml::Value::String(s) => Tree::Str(s),
            toml::Value::Integer(i) => Tree::Int(i),
            toml::Value::Float(f) => Tree::Float(f),
            toml::Value::Boolean(b) => Tree::Bool(b),
            toml::Value::Datetime(d) => Tree::Str(d.to_string()),
            toml::Value::Array(items) => Tree::Array(items.into_iter().map(Tree::from).collect()),
            toml::Value::Table(table) => Tree::from(table),
        }
    }
}

impl From<toml::Table> for Tree {
    fn from(table: toml::Table) -> Self {
        Tree::Table(
            table
                .into_iter()
                .map(|(key, value)| (key, Tree::from(value)))
                .collect(),
        )
    }
}
