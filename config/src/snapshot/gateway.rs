//! Compiled gateways: listeners (servers) and the routes bound to them.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::route::Routes;
use super::Protocol;

/// Server-side TLS of a gateway server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerTls {
    /// `PASSTHROUGH`, `SIMPLE`, `MUTUAL`, `AUTO_PASSTHROUGH`, `ISTIO_MUTUAL`, `OPTIONAL_MUTUAL`.
    pub mode: String,
    /// Redirect plain HTTP to HTTPS with 301.
    pub https_redirect: bool,
    /// Certificate file.
    pub server_certificate: Option<String>,
    /// Key file.
    pub private_key: Option<String>,
    /// CA file for client certs.
    pub ca_certificates: Option<String>,
    /// Secret name.
    pub credential_name: Option<String>,
    /// Accepted client SANs.
    pub subject_alt_names: Vec<String>,
    /// Min TLS version (`TLSV1_2`, ...).
    pub min_protocol_version: Option<String>,
    /// Max TLS version.
    pub max_protocol_version: Option<String>,
}

/// One gateway listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayServer {
    /// Port number.
    pub port: u16,
    /// Port name.
    pub port_name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Bind address.
    pub bind: Option<String>,
    /// Hosts (`namespace/` prefix removed; `*` allowed).
    pub hosts: Vec<String>,
    /// TLS.
    pub tls: Option<ServerTls>,
}

/// The routes of one VirtualService host on a gateway port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VirtualHost {
    /// Domains matched against Host/SNI (`*` and `*.suffix` wildcards).
    pub domains: Vec<String>,
    /// Rules in order.
    pub routes: Routes,
}

/// A compiled Gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Gateway {
    /// `namespace/name`.
    pub name: String,
    /// Gateway workload labels.
    pub selector: BTreeMap<String, String>,
    /// Listeners.
    pub servers: Vec<GatewayServer>,
    /// Port → virtual hosts bound to it, in VirtualService order
    /// (creation order is not known from files: sorted by namespace/name).
    pub routes: BTreeMap<u16, Vec<VirtualHost>>,
}
