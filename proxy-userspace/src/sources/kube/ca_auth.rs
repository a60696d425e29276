//! The CA's callers under Kubernetes: a service-account token checked with
//! a TokenReview, then istiod's rules (istio/istio
//! `security/pkg/server/ca/server.go` and `node_auth.go`):
//!
//! - a token of a **trusted node account** (`--trusted-node-accounts`,
//!   istiod's `CA_TRUSTED_NODE_ACCOUNTS`; Strait's DaemonSet runs as
//!   `strait-system/strait`) must be bound to a pod (a projected token:
//!   the review names the pod and its UID); that pod must exist with that
//!   UID and service account, and its `spec.nodeName` is the caller's
//!   node. The node may then obtain identities of pods scheduled on it
//!   ([`super::pods::PodIndex`]).
//! - any other service account's token gets only its own identity
//!   `spiffe://<trust-domain>/ns/<namespace>/sa/<name>`.
use std::collections::BTreeSet;
use std::sync::Arc;

use super::pods::PodIndex;
use super::review::{TokenReviewError, TokenReviewer};
use crate::identity::ca::{AuthFailure, AuthFuture, Caller, TokenAuthenticator};
use crate::identity::SpiffeId;

/// Istio's default token audience for its CA (`TOKEN_AUDIENCES`).
pub const DEFAULT_AUDIENCE: &str = "istio-ca";

/// The service account Strait's DaemonSet runs as (`deploy/base`).
pub const DEFAULT_NODE_ACCOUNT: &str = "strait-system/strait";

/// Parses `NAMESPACE/NAME`. Errors name what is wrong.
pub fn parse_account(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!(
            "{s:?}: want NAMESPACE/SERVICE-ACCOUNT, e.g. {DEFAULT_NODE_ACCOUNT}"
        )),
    }
}

/// TokenReview authentication with istiod's node rule.
pub struct KubeCaAuth {
    reviewer: TokenReviewer,
    pods: Arc<PodIndex>,
    trusted: BTreeSet<(String, String)>,
    trust_domain: String,
}

impl KubeCaAuth {
    /// Reviews tokens with `reviewer`; `trusted` are the node accounts
    /// (namespace, name) allowed to ask for identities of pods on their
    /// node; `pods` says where pods run.
    pub fn new(
        reviewer: TokenReviewer,
        pods: Arc<PodIndex>,
        trusted: impl IntoIterator<Item = (String, String)>,
        trust_domain: &str,
    ) -> Self {
        Self {
            reviewer,
            pods,
            trusted: trusted.into_iter().collect(),
            trust_domain: trust_domain.to_string(),
        }
    }

    async fn caller(&self, token: &str) -> Result<Caller, AuthFailure> {
        let unauth = |m: String| AuthFailure::Unauthenticated(m);
        let r = match self.reviewer.review(token).await {
            Ok(r) => r,
            Err(TokenReviewError::Request(e)) => {
                tracing::error!("CA: TokenReview failed: {e}");
                return Err(AuthFailure::Unavailable(
                    "the CA cannot review tokens with the API server".into(),
                ));
            }
            Err(e) => {
                return Err(unauth(format!("request authenticate failure: {e}")));
            }
        };
        let account = (r.namespace.clone(), r.service_account.clone());
        if !self.trusted.contains(&account) {
            return Ok(Caller::Workload(SpiffeId::new(
                &self.trust_domain,
                &r.namespace,
                &r.service_account,
            )));
        }
        let who = format!("{}/{}", r.namespace, r.service_account);
        let (Some(pod), Some(uid)) = (r.pod_name.as_deref(), r.pod_uid.as_deref()) else {
            return Err(unauth(format!(
                "node account {who}: the token is not bound to a pod (use a projected service-account token)"
            )));
        };
        if !self.pods.synced() {
            // Not an unknown pod: the CA does not know any pod yet.
            return Err(AuthFailure::Unavailable(
                "the CA has not listed the cluster's Pods yet".into(),
            ));
        }
        let Some(facts) = self.pods.pod(&r.namespace, pod) else {
            return Err(unauth(format!(
                "node account {who}: its pod {}/{pod} is not known to the CA",
                r.namespace
            )));
        };
        if facts.uid != uid {
            // A pod re-created with the same name: istiod refuses too, the
            // caller retries with its new token.
            return Err(unauth(format!(
                "node account {who}: pod {}/{pod} found, but its UID is {} and the token's {uid}",
                r.namespace, facts.uid
            )));
        }
        if facts.service_account != r.service_account {
            return Err(unauth(format!(
                "node account {who}: pod {}/{pod} runs as {}",
                r.namespace, facts.service_account
            )));
        }
        if facts.node.is_empty() {
            return Err(unauth(format!(
                "node account {who}: pod {}/{pod} is not scheduled on a node",
                r.namespace
            )));
        }
        if let Some(n) = r.node_name.as_deref() {
            if n != facts.node {
                return Err(unauth(format!(
                    "node account {who}: the token names node {n}, pod {}/{pod} is on {}",
                    r.namespace, facts.node
                )));
            }
        }
        Ok(Caller::Node(facts.node))
    }
}

impl TokenAuthenticator for KubeCaAuth {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(self.caller(token))
    }
}

/// Starts the CA's Kubernetes side on the current runtime: the pod
/// watcher (the returned task; abort it to stop) and the authenticator.
pub fn start(
    client: kube::Client,
    audiences: Vec<String>,
    trusted: Vec<(String, String)>,
    trust_domain: &str,
) -> (Arc<KubeCaAuth>, Arc<PodIndex>, tokio::task::JoinHandle<()>) {
    let pods = PodIndex::new();
    let task = tokio::spawn(super::pods::watch_pods(client.clone(), pods.clone()));
    let auth = Arc::new(KubeCaAuth::new(
        TokenReviewer::new(client, audiences),
        pods.clone(),
        trusted,
        trust_domain,
    ));
    (auth, pods, task)
}
