//! TLS origination: DestinationRule `trafficPolicy.tls` modes `SIMPLE` and
//! `MUTUAL` (Istio's "Egress TLS origination" task; Envoy's
//! `UpstreamTlsContext`). The proxy speaks plain HTTP or TCP with the
//! client and TLS with the upstream endpoint.
//!
//! A cluster's [`Origination`] is built when the cluster is (at
//! snapshot-swap time, never per request): the files named by
//! `caCertificates`, `clientCertificate`, `privateKey` and `caCrl` are read
//! then and one `rustls::ClientConfig` is shared by every connection of the
//! cluster. What a setting means:
//!
//! | field | effect |
//! |---|---|
//! | `caCertificates` | PEM bundle the server chain must end in; unset: the system trust store (Istio's `VERIFY_CERTIFICATE_AT_CLIENT`) |
//! | `sni` | server name sent and checked; unset: the cluster's host |
//! | `subjectAltNames` | one of the server certificate's SANs must equal one of them (instead of the host-name check) |
//! | `insecureSkipVerify` | no certificate check |
//! | `clientCertificate` / `privateKey` | the client chain and key presented (`MUTUAL`) |
//! | `caCrl` | revoked certificates are refused |
//! | `credentialName` | **refused**: Strait has no Kubernetes Secret model |
//!
//! Any setting that cannot be honoured (an unreadable or invalid file,
//! `credentialName`, `MUTUAL` without a key) fails closed: the error is
//! logged once when the cluster is built, naming the cluster and field,
//! and every connection of the cluster fails with Envoy's response flag
//! `UF` (HTTP: 503) and that text as `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
//! A failed handshake is `UF` too, with the reason `TLS_error: <why>`.
//!
//! ALPN: `h2` for HTTP/2 clusters, `http/1.1` for HTTP/1.1 ones, none for
//! TCP (as Envoy sets it from the cluster's protocol options).
mod client;
mod verify;

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use strait_config::snapshot::{ClientTls, TlsMode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

pub use client::{Dial, LocalAddr, OriginClients};

/// Why an originated connection could not be made. The message is the
/// whole reason (no source), so it is what Envoy's
/// `%UPSTREAM_TRANSPORT_FAILURE_REASON%` shows.
#[derive(Debug, thiserror::Error)]
pub enum OriginationError {
    /// The cluster's TLS settings cannot be honoured (fail closed).
    #[error("{0}")]
    Config(Arc<str>),
    /// The TLS handshake failed (certificate, SAN, protocol, peer reset).
    #[error("TLS_error: {0}")]
    Handshake(String),
    /// The TCP connect failed.
    #[error("{0}")]
    Connect(std::io::Error),
    /// The connect timeout passed (TCP connect and handshake).
    #[error("connect timeout")]
    Timeout,
    /// Strait refused to connect (the endpoint is one of its own listeners).
    #[error("{0}")]
    Refused(&'static str),
}

/// Which application protocol the cluster speaks over TLS (ALPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1`.
    Http1,
    /// `h2`.
    Http2,
    /// No ALPN (TCP, or the client's protocol).
    None,
}

struct Built {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

struct Inner {
    /// What it was built from (equality: same settings, same pools).
    spec: ClientTls,
    host: String,
    alpn: Alpn,
    built: Result<Built, Arc<str>>,
}

/// A cluster's TLS origination: a shared rustls client config and the
/// server name, or the reason it fails closed. Cheap to clone.
#[derive(Clone)]
pub struct Origination(Arc<Inner>);

impl std::fmt::Debug for Origination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origination")
            .field("mode", &self.0.spec.mode)
            .field("host", &self.0.host)
            .field("error", &self.0.built.as_ref().err())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Origination {
    fn eq(&self, other: &Self) -> bool {
        self.0.spec == other.0.spec && self.0.host == other.0.host && self.0.alpn == other.0.alpn
    }
}
impl Eq for Origination {}

/// rustls with *ring*, the workspace's provider (no aws-lc build). rustls
/// 0.23.48 deprecates it for lacking post-quantum key exchange; X25519 and
/// the NIST curves remain.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system trust store, read once (Debian: `/etc/ssl/certs`).
fn system_roots() -> Result<Arc<RootCertStore>, Arc<str>> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, Arc<str>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "caCertificates: not set and the system trust store has no certificates".into(),
                );
            }
            Ok(Arc::new(store))
        })
        .clone()
}

fn read(field: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{field}: {path}: {e}"))
}

fn certs(field: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(field, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{field}: {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{field}: {path}: no PEM certificate"));
    }
    Ok(certs)
}

fn build(spec: &ClientTls, host: &str, alpn: Alpn) -> Result<Built, String> {
    if let Some(name) = &spec.credential_name {
        return Err(format!(
            "credentialName: {name}: Strait does not read Kubernetes Secrets; use caCertificates/clientCertificate/privateKey files"
        ));
    }
    let sni = spec.sni.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(sni.to_string())
        .map_err(|_| format!("sni: {sni:?} is not a DNS name or IP address"))?;
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if spec.insecure_skip_verify
    {
        Arc::new(verify::NoVerify(provider.clone()))
    } else {
        let roots = match &spec.ca_certificates {
            Some(path) => {
                let mut store = RootCertStore::empty();
                for c in certs("caCertificates", path)? {
                    store
                        .add(c)
                        .map_err(|e| format!("caCertificates: {path}: {e}"))?;
                }
                Arc::new(store)
            }
            None => system_roots().map_err(|e| e.to_string())?,
        };
        let mut vb =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone());
        if let Some(path) = &spec.ca_crl {
            let bytes = read("caCrl", path)?;
            let crls: Vec<CertificateRevocationListDer<'static>> =
                CertificateRevocationListDer::pem_slice_iter(&bytes)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("caCrl: {path}: {e}"))?;
            if crls.is_empty() {
                return Err(format!("caCrl: {path}: no PEM CRL"));
            }
            vb = vb.with_crls(crls);
        }
        let inner = vb.build().map_err(|e| format!("caCertificates: {e}"))?;
        Arc::new(verify::SanVerifier {
            inner,
            sans: spec.subject_alt_names.clone(),
        })
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (spec.mode, &spec.client_certificate, &spec.private_key) {
        (TlsMode::Mutual, Some(cert), Some(key)) => {
            let chain = certs("clientCertificate", cert)?;
            let key_bytes = read("privateKey", key)?;
            let key = PrivateKeyDer::from_pem_slice(&key_bytes)
                .map_err(|e| format!("privateKey: {key}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("clientCertificate/privateKey: {e}"))?
        }
        (TlsMode::Mutual, _, _) => {
            return Err(
                "MUTUAL needs clientCertificate and privateKey (or credentialName)".to_string(),
            )
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match alpn {
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
        Alpn::Http2 => vec![b"h2".to_vec()],
        Alpn::None => Vec::new(),
    };
    // No session resumption across connections' identities is needed;
    // rustls' default in-memory cache is per config, i.e. per cluster.
    Ok(Built {
        config: Arc::new(config),
        server_name,
    })
}

impl Origination {
    /// The origination of cluster `name` (service `host`) for its TLS
    /// settings, `None` unless the mode is `SIMPLE` or `MUTUAL`. Reads the
    /// files now; a setting that cannot be honoured is logged (naming the
    /// cluster and field) and kept as the reason every connection fails.
    pub fn for_cluster(name: &str, host: &str, tls: &ClientTls, alpn: Alpn) -> Option<Self> {
        if !tls.originates() {
            return None;
        }
        let built = build(tls, host, alpn).map_err(|e| {
            tracing::error!(
                "cluster {name}: DestinationRule trafficPolicy.tls {e}: connections fail closed (503 UF)"
            );
            Arc::<str>::from(e)
        });
        Some(Self(Arc::new(Inner {
            spec: tls.clone(),
            host: host.to_string(),
            alpn,
            built,
        })))
    }

    /// Why every connection fails, when the settings cannot be honoured.
    pub fn error(&self) -> Option<&str> {
        self.0.built.as_ref().err().map(|e| &**e)
    }

    /// Runs the TLS handshake over a connected stream.
    pub async fn handshake<S>(&self, stream: S) -> Result<TlsStream<S>, OriginationError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let b = self
            .0
            .built
            .as_ref()
            .map_err(|e| OriginationError::Config(e.clone()))?;
        tokio_rustls::TlsConnector::from(b.config.clone())
            .connect(b.server_name.clone(), stream)
            .await
            .map_err(|e| {
                // rustls errors arrive wrapped in an io::Error.
                let why = match e.get_ref() {
                    Some(inner) => inner.to_string(),
                    None => e.to_string(),
                };
                OriginationError::Handshake(why)
            })
    }
}
