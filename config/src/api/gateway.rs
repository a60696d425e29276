//! `networking.istio.io` Gateway: the listeners of an ingress/egress gateway.
use serde::{Deserialize, Serialize};

use super::virtual_service::Labels;

/// `istio.networking.v1.Gateway`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// Listeners.
    pub servers: Vec<Server>,
    /// Gateway pods (labels).
    pub selector: Labels,
}

/// `Server`: one listener port with its hosts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// Listener port.
    pub port: Option<Port>,
    /// Bind address or unix socket.
    pub bind: Option<String>,
    /// Hosts exposed, optionally `namespace/host`.
    pub hosts: Vec<String>,
    /// TLS settings.
    pub tls: Option<ServerTlsSettings>,
    /// Default endpoint (kept).
    pub default_endpoint: Option<String>,
    /// Server name.
    pub name: Option<String>,
}

/// `Port` (Gateway and ServiceEntry).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// Port number.
    pub number: u32,
    /// `HTTP`, `HTTPS`, `GRPC`, `HTTP2`, `MONGO`, `TCP`, `TLS`, ...
    pub protocol: String,
    /// Port name.
    pub name: String,
    /// Endpoint port (ServiceEntry).
    pub target_port: Option<u32>,
}

/// `ServerTLSSettings`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// Redirect HTTP to HTTPS (301).
    pub https_redirect: Option<bool>,
    /// `PASSTHROUGH`, `SIMPLE`, `MUTUAL`, `AUTO_PASSTHROUGH`, `ISTIO_MUTUAL`, `OPTIONAL_MUTUAL`.
    pub mode: Option<String>,
    /// Server certificate file.
    pub server_certificate: Option<String>,
    /// Key file.
    pub private_key: Option<String>,
    /// Client CA bundle file.
    pub ca_certificates: Option<String>,
    /// CRL file.
    pub ca_crl: Option<String>,
    /// Secret with cert/key.
    pub credential_name: Option<String>,
    /// Several secrets.
    pub credential_names: Vec<String>,
    /// Accepted client SANs.
    pub subject_alt_names: Vec<String>,
    /// Accepted client cert SPKI hashes.
    pub verify_certificate_spki: Vec<String>,
    /// Accepted client cert hashes.
    pub verify_certificate_hash: Vec<String>,
    /// `TLS_AUTO`, `TLSV1_0` .. `TLSV1_3`.
    pub min_protocol_version: Option<String>,
    /// `TLS_AUTO`, `TLSV1_0` .. `TLSV1_3`.
    pub max_protocol_version: Option<String>,
    /// Cipher suites.
    pub cipher_suites: Vec<String>,
    /// `caCertCredentialName` (kept; not enforced).
    pub ca_cert_credential_name: Option<String>,
    /// `ecdhCurves` (kept; not enforced).
    pub ecdh_curves: Vec<String>,
    /// `insecureSkipVerify` (kept; not enforced).
    pub insecure_skip_verify: Option<bool>,
    /// `tlsCertificates` (kept; not enforced).
    pub tls_certificates: Vec<serde_yaml::Value>,
}
