//! Workload identity, as Istio's Citadel (inside istiod) and ztunnel do it:
//! X.509 certificates whose only URI SAN is the workload's SPIFFE ID
//! (`spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`).
//!
//! - [`ca`]: the certificate authority behind `strait ca serve` (and embedded
//!   in `strait run --ca-dir`): Istio's plugged-in CA layout, Istio's CA API
//!   (`istio.v1.auth.IstioCertificateService/CreateCertificate`) over TLS,
//!   bearer-token callers that may only obtain identities of pods on their node.
//! - [`client`]: the node side: one key and certificate per service account
//!   with a meshed pod on the node, renewed at half life, in a [`CertStore`].
//! - [`certs`]: PEM/DER helpers, what `/certs` shows of a certificate.
//! - [`proto`]: Istio's CA API messages (prost, written from
//!   `security/proto/istioca.proto`).
pub mod ca;
pub mod certs;
pub mod client;
pub mod proto;

use std::fmt;
use std::str::FromStr;

pub use certs::{CertInfo, WorkloadCert};
pub use client::{CertStore, SecretManager};

/// The trust domain when the mesh config names none (Istio's default).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Errors of the identity layer.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// CA material (`--ca-dir`, `--ca-root`) is missing, malformed or inconsistent.
    #[error("CA material: {0}")]
    Material(String),
    /// A certificate, key or CSR could not be parsed or generated.
    #[error("certificate: {0}")]
    Cert(String),
    /// Not a SPIFFE ID of the form `spiffe://<td>/ns/<ns>/sa/<sa>`.
    #[error(
        "invalid SPIFFE ID {0:?}: want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    SpiffeId(String),
    /// The tokens file has a malformed line.
    #[error("{path}:{line}: {msg}")]
    Tokens {
        /// The tokens file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// The CA refused or could not be reached (gRPC status and message).
    #[error("CA request failed: {0}")]
    Ca(String),
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
}

impl IdentityError {
    /// An [`IdentityError::Io`] naming `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        IdentityError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// A workload identity: `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`,
/// exactly the form Istio issues (ztunnel's `Identity::Spiffe`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct SpiffeId {
    /// Trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Kubernetes service account.
    pub service_account: String,
}

impl SpiffeId {
    /// The identity of service account `sa` in namespace `ns`.
    pub fn new(trust_domain: &str, ns: &str, sa: &str) -> Self {
        SpiffeId {
            trust_domain: trust_domain.into(),
            namespace: ns.into(),
            service_account: sa.into(),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;

    /// Parses `spiffe://<td>/ns/<ns>/sa/<sa>` (no other path shape, no empty
    /// segment, no query or fragment), as ztunnel's `Identity::from_str`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdentityError::SpiffeId(s.to_string());
        let rest = s.strip_prefix("spiffe://").ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [td, "ns", ns, "sa", sa] = parts.as_slice() else {
            return Err(bad());
        };
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        };
        if !(ok(td) && ok(ns) && ok(sa)) {
            return Err(bad());
        }
        Ok(SpiffeId::new(td, ns, sa))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_parse_and_print_in_istio_form() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
            .parse()
            .unwrap();
        assert_eq!(
            id,
            SpiffeId::new("cluster.local", "default", "bookinfo-reviews")
        );
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
        );
        for bad in [
            "spiffe://cluster.local/ns/default",
            "spiffe://cluster.local/ns//sa/x",
            "http://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/ns/a/sa/b?x=1",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad}");
        }
    }
}
