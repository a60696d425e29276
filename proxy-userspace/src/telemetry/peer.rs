//! What a connection knows about the workloads' identities, for Istio's
//! metric labels (`connection_security_policy`, `source_principal`,
//! `destination_principal`, `reporter`) and Envoy's access-log operators
//! `%DOWNSTREAM_PEER_URI_SAN%` / `%UPSTREAM_PEER_URI_SAN%`.
//!
//! The proxy fills one [`PeerInfo`] per connection: the plaintext paths
//! (the outbound listener, the TCP proxy) say [`SecurityPolicy::None`];
//! the HBONE paths say [`SecurityPolicy::MutualTls`] with the SPIFFE IDs
//! the handshake verified (the client's on the destination node, the
//! server's on the source node).
use std::sync::Arc;

/// Istio's `connection_security_policy` label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecurityPolicy {
    /// Mesh mTLS (HBONE): `mutual_tls`.
    MutualTls,
    /// Known plain text: `none`.
    None,
    /// Not known (e.g. a request refused before its connection was
    /// classified): `unknown`.
    #[default]
    Unknown,
}

impl SecurityPolicy {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityPolicy::MutualTls => "mutual_tls",
            SecurityPolicy::None => "none",
            SecurityPolicy::Unknown => "unknown",
        }
    }
}

/// Istio's `reporter` label: which side's proxy recorded the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reporter {
    /// The client's node (outbound).
    #[default]
    Source,
    /// The server's node (inbound).
    Destination,
}

impl Reporter {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

/// The identities a connection carries (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// How the connection was secured.
    pub security: SecurityPolicy,
    /// The client workload's SPIFFE ID (`spiffe://<td>/ns/<ns>/sa/<sa>`):
    /// `source_principal`, `%DOWNSTREAM_PEER_URI_SAN%`.
    pub source_principal: Option<Arc<str>>,
    /// The server workload's SPIFFE ID: `destination_principal`,
    /// `%UPSTREAM_PEER_URI_SAN%`.
    pub destination_principal: Option<Arc<str>>,
    /// Which side recorded it.
    pub reporter: Reporter,
}

impl PeerInfo {
    /// A plain-text connection seen on the source side.
    pub fn plaintext() -> Self {
        PeerInfo {
            security: SecurityPolicy::None,
            ..Default::default()
        }
    }

    /// An mTLS connection with the verified identities.
    pub fn mutual_tls(
        reporter: Reporter,
        source_principal: Option<Arc<str>>,
        destination_principal: Option<Arc<str>>,
    ) -> Self {
        PeerInfo {
            security: SecurityPolicy::MutualTls,
            source_principal,
            destination_principal,
            reporter,
        }
    }
}
