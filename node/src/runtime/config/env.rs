//! The environment layer: `SHOAL_*` variables mapped onto the schema's keys.
//!
//! The name after the prefix, lowercased, is a top-level key if it is one; otherwise
//! it is `<section>_<key>`, the section being the longest top-level key followed by
//! `_` (section keys contain underscores: `timing_withdraw_grace_ms`). The top-level
//! keys are the schema's own ([`struct_keys`]); which keys a section has is left to
//! the one deserialization, which refuses unknown ones, and [`Environment::blame`]
//! turns such an error back into the variable's name.

use std::collections::BTreeMap;

use super::de::struct_keys;
use super::schema::FileSchema;
use super::tree::Tree;
use super::{ConfigFileError, ENV_PREFIX, POD_NAME_VAR};

/// What the environment said besides its layer: which variable set which key, and
/// `POD_NAME`.
#[derive(Debug)]
pub(super) struct Environment {
    /// A key's dotted path (`http.listen`) and the variable that set it.
    origins: BTreeMap<String, String>,
    /// `POD_NAME`, the default leader-election identity.
    pub pod_name: Option<String>,
}

impl Environment {
    /// Reads the `SHOAL_*` variables of `env` into a layer (and `POD_NAME`); a
    /// variable that names no key is an error.
    pub(super) fn read(
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Tree, Self), ConfigFileError> {
        let top_level = struct_keys::<FileSchema>();
        let mut tree = Tree::empty();
        let mut environment = Environment {
            origins: BTreeMap::new(),
            pod_name: None,
        };
        // Sorted, so that the layer does not depend on the environment's order.
        let vars: BTreeMap<String, String> = env.into_iter().collect();
        for (var, value) in vars {
            if var == POD_NAME_VAR {
                environment.pod_name = Some(value);
                continue;
            }
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let name = rest.to_ascii_lowercase();
            let Some(path) = key_path(&name, top_level) else {
                return Err(ConfigFileError::Env {
                    var,
                    key: name,
                    reason: format!(
                        "names no key: {ENV_PREFIX}<KEY> sets a top-level key and \
                         {ENV_PREFIX}<SECTION>_<KEY> a section's, out of {}",
                        top_level.join(", ")
                    ),
                });
            };
            environment.origins.insert(path.join("."), var);
            tree.merge(Tree::nested(&path, Tree::Text(value)));
        }
        Ok((tree, environment))
    }

    /// The error for `field`: the variable's if one set that key (or a key above it),
    /// else the file's. `below`: also blame a variable that set a key below `field`
    /// (for a deserialization error on a table the environment made).
    pub(super) fn blame(&self, field: String, reason: String, below: bool) -> ConfigFileError {
        let under = |path: &str, above: &str| {
            path == above
                || path
                    .strip_prefix(above)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        };
        let origin = self
            .origins
            .iter()
            .find(|(key, _)| under(&field, key) || (below && under(key, &field)));
        match origin {
            Some((_, var)) => ConfigFileError::Env {
                var: var.clone(),
                key: field,
                reason,
            },
            None => ConfigFileError::Field { field, reason },
        }
    }
}

/// The key path a variable's name (after the prefix, lowercased) sets.
fn key_path(name: &str, top_level: &[&str]) -> Option<Vec<String>> {
    if top_level.contains(&name) {
        return Some(vec![name.to_owned()]);
    }
    let section = top_level
        .iter()
        .filter(|section| {
            name.strip_prefix(**section)
                .and_then(|rest| rest.strip_prefix('_'))
                .is_some_and(|key| !key.is_empty())
        })
        .max_by_key(|section| section.len())?;
    Some(vec![
        (*section).to_owned(),
        name[section.len() + 1..].to_owned(),
    ])
}
