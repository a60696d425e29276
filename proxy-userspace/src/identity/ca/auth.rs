//! Who may ask the CA for what.
//!
//! Callers authenticate with `authorization: Bearer <token>`. Without
//! Kubernetes, tokens come from the `--tokens` file: one `TOKEN NODE-NAME`
//! pair per line (blank lines and `#` comments ignored), read again on every
//! request so tokens can be added or revoked without a restart. A line
//! `TOKEN spiffe://<td>/ns/<ns>/sa/<sa>` is a workload's own token (what a
//! Kubernetes service-account token is to istiod): its holder gets that
//! identity and no other — how a ztunnel in dedicated mode, which sends no
//! `ImpersonatedIdentity`, is served. A node may
//! only obtain identities of pods scheduled on it — istiod's rule for
//! ztunnel's `ImpersonatedIdentity` (`pilot/pkg/.../nodeauth`): the pods come
//! from the config directory's Pod objects (`spec.nodeName`,
//! `spec.serviceAccountName`, `status.podIP`).
//!
//! Under Kubernetes (`strait ca serve --kubeconfig/--in-cluster`) the token
//! is a service-account token checked with a TokenReview
//! ([`TokenSource::Review`], implemented by `sources::kube::ca_auth`), and
//! the pods come from the API server.
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use strait_config::snapshot::MeshSnapshot;

use super::super::{IdentityError, SpiffeId};

/// Who a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A node proxy: it may obtain identities of pods scheduled on the node.
    Node(String),
    /// One workload: it may obtain this identity only.
    Workload(SpiffeId),
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Node(n) => write!(f, "node {n}"),
            Caller::Workload(id) => write!(f, "workload {id}"),
        }
    }
}

/// Why a caller was not authenticated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// The token is not valid, or its holder may not use the CA (gRPC
    /// `Unauthenticated`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The CA cannot check tokens right now (tokens file unreadable, API
    /// server unreachable): gRPC `Unavailable`, the caller retries. Fails
    /// closed.
    #[error("{0}")]
    Unavailable(String),
}

/// A future of [`TokenAuthenticator::authenticate`].
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Caller, AuthFailure>> + Send + 'a>>;

/// Authenticates a bearer token by asking someone else (Kubernetes'
/// TokenReview: `sources::kube::ca_auth::KubeCaAuth`).
pub trait TokenAuthenticator: Send + Sync + 'static {
    /// Who holds `token`. Never logs the token.
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a>;
}

/// Where the CA checks bearer tokens.
#[derive(Clone)]
pub enum TokenSource {
    /// The `--tokens` file, read on every request.
    File(PathBuf),
    /// Fixed tokens (the CA embedded in `strait run`: one random token for
    /// the node itself, plus `--ca-tokens`).
    Static(Arc<HashMap<String, Caller>>),
    /// Service-account tokens checked by the API server (TokenReview).
    Review(Arc<dyn TokenAuthenticator>),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::File(p) => write!(f, "File({})", p.display()),
            TokenSource::Static(m) => write!(f, "Static({} tokens)", m.len()),
            TokenSource::Review(_) => f.write_str("Review"),
        }
    }
}

/// Parses a tokens file: `TOKEN NODE-NAME` or `TOKEN SPIFFE-ID` per line.
pub fn parse_tokens(path: &Path, text: &str) -> Result<HashMap<String, Caller>, IdentityError> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |msg: &str| IdentityError::Tokens {
            path: path.display().to_string(),
            line: i + 1,
            msg: msg.into(),
        };
        let mut parts = line.split_whitespace();
        let (Some(token), Some(who), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err("want `TOKEN NODE-NAME` or `TOKEN spiffe://...`"));
        };
        if token.len() < 16 {
            return Err(err("token shorter than 16 characters"));
        }
        let caller = if who.starts_with("spiffe://") {
            Caller::Workload(
                who.parse()
                    .map_err(|e: IdentityError| err(&e.to_string()))?,
            )
        } else {
            Caller::Node(who.to_string())
        };
        if out.insert(token.to_string(), caller).is_some() {
            return Err(err("token listed twice"));
        }
    }
    Ok(out)
}

/// Constant-time equality (the comparison does not reveal how much of a
/// guessed token matched).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl TokenSource {
    /// Who a token belongs to, for every source. Errors: an unknown or
    /// invalid token is [`AuthFailure::Unauthenticated`]; a tokens file
    /// that cannot be read or an API server that cannot be asked is
    /// [`AuthFailure::Unavailable`].
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AuthFailure> {
        if let TokenSource::Review(r) = self {
            return r.authenticate(token).await;
        }
        match self.caller_of(token) {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err(AuthFailure::Unauthenticated(
                "request authenticate failure: unknown bearer token".into(),
            )),
            Err(e) => {
                tracing::error!("CA: cannot check tokens: {e}");
                Err(AuthFailure::Unavailable(
                    "the CA cannot read its tokens file".into(),
                ))
            }
        }
    }

    /// Who a token of the file or the fixed set belongs to (`Ok(None)`
    /// for [`TokenSource::Review`]: use [`TokenSource::authenticate`]).
    /// `Err` when the tokens file cannot be read or parsed (the CA answers
    /// `Unavailable`: it fails closed).
    pub fn caller_of(&self, token: &str) -> Result<Option<Caller>, IdentityError> {
        let lookup = |m: &HashMap<String, Caller>| {
            let mut found = None;
            for (t, n) in m {
                if ct_eq(t.as_bytes(), token.as_bytes()) {
                    found = Some(n.clone());
                }
            }
            found
        };
        match self {
            TokenSource::Static(m) => Ok(lookup(m)),
            TokenSource::File(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| IdentityError::io(p, e))?;
                Ok(lookup(&parse_tokens(p, &text)?))
            }
            TokenSource::Review(_) => Ok(None),
        }
    }
}

/// Which identities a node may obtain: those of pods scheduled on it.
pub trait NodePods: Send + Sync + 'static {
    /// `true` when a pod in `id.namespace` with service account
    /// `id.service_account` has `spec.nodeName == node`.
    fn runs_on(&self, node: &str, id: &SpiffeId) -> bool;

    /// Whether the pods are known (the API server's first list is done):
    /// the CA's `/ready`.
    fn ready(&self) -> bool {
        true
    }

    /// How many pods each node has (the CA's `/config_dump`).
    fn pods_per_node(&self) -> BTreeMap<String, usize>;
}

impl NodePods for Arc<ArcSwap<MeshSnapshot>> {
    fn runs_on(&self, node: &str, id: &SpiffeId) -> bool {
        self.load().workloads.values().any(|w| {
            w.node.as_deref() == Some(node)
                && w.namespace == id.namespace
                && w.service_account == id.service_account
        })
    }

    fn pods_per_node(&self) -> BTreeMap<String, usize> {
        let mut per_node = BTreeMap::new();
        for w in self.load().workloads.values() {
            if let Some(n) = &w.node {
                *per_node.entry(n.clone()).or_default() += 1;
            }
        }
        per_node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_lines_and_errors_name_the_line() {
        let p = Path::new("/etc/strait/tokens");
        let m = parse_tokens(
            p,
            "# comment\n\nabcdefghijklmnop0 node-a\n  qrstuvwxyz0123456 node-b  \nworkload-token-0123 spiffe://cluster.local/ns/default/sa/default\n",
        )
        .unwrap();
        assert_eq!(m["abcdefghijklmnop0"], Caller::Node("node-a".into()));
        assert_eq!(m["qrstuvwxyz0123456"], Caller::Node("node-b".into()));
        assert_eq!(
            m["workload-token-0123"],
            Caller::Workload(SpiffeId::new("cluster.local", "default", "default"))
        );
        let e = parse_tokens(p, "abcdefghijklmnop0 node-a extra\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/strait/tokens:1: want `TOKEN NODE-NAME` or `TOKEN spiffe://...`"
        );
        let e = parse_tokens(p, "abcdefghijklmnop0 spiffe://cluster.local/ns/x\n").unwrap_err();
        assert!(e.to_string().contains("invalid SPIFFE ID"), "{e}");
        let e = parse_tokens(p, "\nshort node-a\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/etc/strait/tokens:2: token shorter"),
            "{e}"
        );
        let src = TokenSource::Static(Arc::new(m));
        assert_eq!(
            src.caller_of("abcdefghijklmnop0").unwrap(),
            Some(Caller::Node("node-a".into()))
        );
        assert_eq!(src.caller_of("abcdefghijklmnop1").unwrap(), None);
        assert_eq!(src.caller_of("").unwrap(), None);
    }
}
