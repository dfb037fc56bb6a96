//! The About API (KEP-2149): the cluster's id and its ClusterSet, as ClusterProperties.
//!
//! `cluster.clusterset.k8s.io` is checked against the configured cluster id: a cluster
//! that says it is another refuses this node, with an error naming both values, since
//! signing records for the wrong cluster would poison every peer's view. An absent
//! property is created, and so is `clusterset.k8s.io` with the ClusterSet's name.

use kube::Client;
use kube::api::{Api, PostParams};
use tracing::info;

use super::errors::{ErrorClass, classify};
use super::resources::{ClusterProperty, PROPERTY_CLUSTER_ID, PROPERTY_CLUSTERSET};

/// Why the About API check failed.
#[derive(Debug, thiserror::Error)]
pub enum AboutError {
    /// The cluster names itself differently. Nothing was written; the node must not start.
    #[error(
        "ClusterProperty {PROPERTY_CLUSTER_ID} says this cluster is {found:?}, but the node is configured as {configured:?}"
    )]
    Mismatch { found: String, configured: String },
    /// The request failed; `class` says whether retrying may help.
    #[error("ClusterProperty {name}: {source}")]
    Api {
        name: &'static str,
        class: ErrorClass,
        #[source]
        source: kube::Error,
    },
}

impl AboutError {
    /// Whether the check should be tried again later rather than stop the node.
    pub fn is_transient(&self) -> bool {
        match self {
            AboutError::Mismatch { .. } => false,
            AboutError::Api { class, .. } => class.is_transient(),
        }
    }
}

fn api_error(name: &'static str, source: kube::Error) -> AboutError {
    AboutError::Api {
        name,
        class: classify(&source),
        source,
    }
}

/// Checks `cluster.clusterset.k8s.io` against `cluster` and creates whichever of the
/// two properties is absent. A property another replica created meanwhile is read
/// again and checked.
pub async fn check(client: &Client, cluster: &str, clusterset: &str) -> Result<(), AboutError> {
    let api: Api<ClusterProperty> = Api::all(client.clone());
    ensure(&api, PROPERTY_CLUSTER_ID, cluster, true).await?;
    ensure(&api, PROPERTY_CLUSTERSET, clusterset, false).await
}

async fn ensure(
    api: &Api<ClusterProperty>,
    name: &'static str,
    value: &str,
    must_match: bool,
) -> Result<(), AboutError> {
    let found = match api.get_opt(name).await.map_err(|e| api_error(name, e))? {
        Some(found) => found,
        None => {
            let created = api
                .create(&PostParams::default(), &ClusterProperty::new(name, value))
                .await;
            match created {
                Ok(_) => {
                    info!(property = name, value, "ClusterProperty created");
                    return Ok(());
                }
                Err(e) if classify(&e) == ErrorClass::Conflict => {
                    api.get(name).await.map_err(|e| api_error(name, e))?
                }
                Err(e) => return Err(api_error(name, e)),
            }
        }
    };
    if must_match && found.spec.value != value {
        return Err(AboutError::Mismatch {
            found: found.spec.value,
            configured: value.to_owned(),
        });
    }
    if found.spec.value != value {
        info!(property = name, found = %found.spec.value, configured = value, "ClusterProperty differs; left as it is");
    }
    Ok(())
}
