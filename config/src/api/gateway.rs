//! `networking.istio.io` Gateway: the listeners of an ingress/egress gateway.
use serde::{Deserialize, Serialize};

use super::virtual_service::Labels;

/// `istio.networking.v1.Gateway`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// Listeners.
    #[serde(default)]
    pub servers: Vec<Server>,
    /// Gateway pods (labels).
    #[serde(default)]
    pub selector: Labels,
}

/// `Server`: one listener port with its hosts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// Listener port.
    #[serde(default)]
    pub port: Option<Port>,
    /// Bind address or unix socket.
    #[serde(default)]
    pub bind: Option<String>,
    /// Hosts exposed, optionally `namespace/host`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<ServerTlsSettings>,
    /// Default endpoint (kept).
    #[serde(default)]
    pub default_endpoint: Option<String>,
    /// Server name.
    #[serde(default)]
    pub name: Option<String>,
}

/// `Port` (Gateway and ServiceEntry).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// `HTTP`, `HTTPS`, `GRPC`, `HTTP2`, `MONGO`, `TCP`, `TLS`, ...
    #[serde(default)]
    pub protocol: String,
    /// Port name.
    #[serde(default)]
    pub name: String,
    /// Endpoint port (ServiceEntry).
    #[serde(default)]
    pub target_port: Option<u32>,
}

/// `ServerTLSSettings`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// Redirect HTTP to HTTPS (301).
    #[serde(default)]
    pub https_redirect: Option<bool>,
    /// `PASSTHROUGH`, `SIMPLE`, `MUTUAL`, `AUTO_PASSTHROUGH`, `ISTIO_MUTUAL`, `OPTIONAL_MUTUAL`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Server certificate file.
    #[serde(default)]
    pub server_certificate: Option<String>,
    /// Key file.
    #[serde(default)]
    pub private_key: Option<String>,
    /// Client CA bundle file.
    #[serde(default)]
    pub ca_certificates: Option<String>,
    /// CRL file.
    #[serde(default)]
    pub ca_crl: Option<String>,
    /// Secret with cert/key.
    #[serde(default)]
    pub credential_name: Option<String>,
    /// Several secrets.
    #[serde(default)]
    pub credential_names: Vec<String>,
    /// Accepted client SANs.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// Accepted client cert SPKI hashes.
    #[serde(default)]
    pub verify_certificate_spki: Vec<String>,
    /// Accepted client cert hashes.
    #[serde(default)]
    pub verify_certificate_hash: Vec<String>,
    /// `TLS_AUTO`, `TLSV1_0` .. `TLSV1_3`.
    #[serde(default)]
    pub min_protocol_version: Option<String>,
    /// `TLS_AUTO`, `TLSV1_0` .. `TLSV1_3`.
    #[serde(default)]
    pub max_protocol_version: Option<String>,
    /// Cipher suites.
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    /// `caCertCredentialName` (kept; not enforced).
    #[serde(default)]
    pub ca_cert_credential_name: Option<String>,
    /// `ecdhCurves` (kept; not enforced).
    #[serde(default)]
    pub ecdh_curves: Vec<String>,
    /// `insecureSkipVerify` (kept; not enforced).
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
    /// `tlsCertificates` (kept; not enforced).
    #[serde(default)]
    pub tls_certificates: Vec<serde_yaml::Value>,
}
