//! `apps/v1` Deployment, as much of it as Strait uses.
//!
//! A Deployment matters only for endpoints whose Pod is not among the
//! resources (`reviews-v1-7f9c…` → Deployment `reviews-v1`): its pod
//! template gives the endpoint's labels and service account. The document
//! is parsed with k8s-openapi's full type, so Kubernetes' schema errors
//! (`spec: missing field \`selector\``, a wrong field type, ...) are the
//! same, then kept in this slim form: the full type is ~2.4 KB before any
//! field is set, which is 48 MB for 20,000 Deployments.
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment as KubeDeployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A Deployment's name and pod template identity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Deployment {
    /// Name, namespace, labels of the Deployment itself.
    pub metadata: ObjectMeta,
    /// `spec.template.metadata.labels`: the labels its pods carry.
    pub pod_labels: BTreeMap<String, String>,
    /// `spec.template.spec.serviceAccountName` (None: the pods run as
    /// `default`).
    pub service_account_name: Option<String>,
}

impl From<KubeDeployment> for Deployment {
    fn from(d: KubeDeployment) -> Self {
        let template = d.spec.map(|s| s.template);
        let (labels, spec) = match template {
            Some(t) => (t.metadata.and_then(|m| m.labels), t.spec),
            None => (None, None),
        };
        Deployment {
            metadata: d.metadata,
            pod_labels: labels.unwrap_or_default(),
            service_account_name: spec.and_then(|s| s.service_account_name),
        }
    }
}
