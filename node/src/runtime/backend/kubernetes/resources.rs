//! The custom resources the Kubernetes backend reads and writes, made known to kube:
//! the MCS `ServiceExport` and `ServiceImport` (served as `v1beta1` and `v1alpha1` by
//! the same CRD, so the version is chosen at start) and the About API's
//! `ClusterProperty`.

use std::borrow::Cow;

use k8s_openapi::ClusterResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::DynamicResourceScope;
use serde::{Deserialize, Serialize};

use super::super::objects::{MCS_GROUP, ServiceExport, ServiceImport};

/// The MCS API version this cluster's CRDs serve. Shoal writes `v1beta1`; a cluster
/// whose CRDs serve only `v1alpha1` (an older mcs-api) is read and written in that.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum McsVersion {
    #[default]
    V1beta1,
    V1alpha1,
}

impl McsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            McsVersion::V1beta1 => "v1beta1",
            McsVersion::V1alpha1 => "v1alpha1",
        }
    }

    /// `multicluster.x-k8s.io/<version>`.
    pub fn api_version(self) -> String {
        format!("{MCS_GROUP}/{}", self.as_str())
    }
}

macro_rules! mcs_resource {
    ($type:ty, $kind:literal, $plural:literal) => {
        impl Resource for $type {
            type DynamicType = McsVersion;
            // Namespaced; kube asks a resource with a runtime version to say "dynamic".
            type Scope = DynamicResourceScope;

            fn kind(_: &McsVersion) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }

            fn group(_: &McsVersion) -> Cow<'_, str> {
                Cow::Borrowed(MCS_GROUP)
            }

            fn version(version: &McsVersion) -> Cow<'_, str> {
                Cow::Borrowed(version.as_str())
            }

            fn plural(_: &McsVersion) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

mcs_resource!(ServiceExport, "ServiceExport", "serviceexports");
mcs_resource!(ServiceImport, "ServiceImport", "serviceimports");

/// The About API group (KEP-2149).
pub const ABOUT_API_VERSION: &str = "about.k8s.io/v1alpha1";
/// The ClusterProperty naming this cluster within its ClusterSet.
pub const PROPERTY_CLUSTER_ID: &str = "cluster.clusterset.k8s.io";
/// The ClusterProperty naming the ClusterSet.
pub const PROPERTY_CLUSTERSET: &str = "clusterset.k8s.io";
/// Longest ClusterProperty value the CRD accepts.
pub const PROPERTY_VALUE_BYTES_MAX: usize = 128_000;

/// A cluster-scoped property of the cluster (`about.k8s.io/v1alpha1`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterProperty {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ClusterPropertySpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPropertySpec {
    pub value: String,
}

impl ClusterProperty {
    pub fn new(name: &str, value: &str) -> Self {
        Self {
            api_version: ABOUT_API_VERSION.to_owned(),
            kind: "ClusterProperty".to_owned(),
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: ClusterPropertySpec {
                value: value.to_owned(),
            },
        }
    }
}

impl Resource for ClusterProperty {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("ClusterProperty")
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("about.k8s.io")
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1alpha1")
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("clusterproperties")
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
