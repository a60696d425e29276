//! HBONE's TLS, exactly as ztunnel configures rustls
//! (`ztunnel/src/tls/{workload,certificate}.rs`): TLS 1.3 only, AES-GCM
//! suites, X25519, ALPN `h2`, no SNI, no session resumption; the server
//! requires a client certificate chaining to the mesh root with a SPIFFE
//! URI SAN of its trust domain; the client accepts a server only if one URI
//! SAN equals an expected SPIFFE ID (no host-name check).
use std::sync::{Arc, Mutex};

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DistinguishedName, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::HboneError;
use crate::identity::{certs, CertStore, SpiffeId, WorkloadCert};
use crate::transport::verify_sig::handshake_signatures;

/// ALPN of HBONE (both sides).
pub const ALPN_H2: &[u8] = b"h2";

/// The crypto provider HBONE uses: ring with TLS 1.3 AES-256-GCM and
/// AES-128-GCM only (no ChaCha20) and X25519 only, as ztunnel.
// `default_provider` is deprecated only for lacking post-quantum groups;
// HBONE uses X25519 as ztunnel does.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, default_provider, kx_group};
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![kx_group::X25519],
        ..default_provider()
    })
}

/// The URI SANs of a DER certificate (empty when it does not parse or has
/// none).
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    X509Certificate::from_der(der).map_or_else(|_| Vec::new(), |(_, c)| certs::uri_sans(&c))
}

/// The peer's identity: the first URI SAN of its leaf that parses as a
/// SPIFFE ID (ztunnel's `identity()` of a verified peer certificate).
pub fn peer_identity(chain: &[CertificateDer<'_>]) -> Option<SpiffeId> {
    let leaf = chain.first()?;
    uri_sans(leaf).iter().find_map(|u| u.parse().ok())
}

/// A certificate refused by the SPIFFE rule (logged at debug level; the
/// peer sees a TLS alert).
fn reject(msg: String) -> rustls::Error {
    tracing::debug!("HBONE peer certificate rejected: {msg}");
    rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
}

/// The destination side's client-certificate verifier: rustls' WebPki
/// chain check to the mesh root (client-auth EKU, validity), then at least
/// one URI SAN must be a SPIFFE ID of `trust_domain`. Namespace and
/// service account are left to authorization policy.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

impl SpiffeClientVerifier {
    /// A verifier trusting `roots` for identities of `trust_domain`.
    /// Errors: no usable root.
    pub fn new(roots: RootCertStore, trust_domain: &str) -> Result<Self, HboneError> {
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| HboneError::Config(format!("client verifier: {e}")))?;
        Ok(Self {
            inner,
            trust_domain: trust_domain.to_string(),
        })
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let sans = uri_sans(end_entity);
        let ok = sans.iter().any(|u| {
            u.parse::<SpiffeId>()
                .is_ok_and(|id| id.trust_domain == self.trust_domain)
        });
        if !ok {
            return Err(reject(format!(
                "client URI SANs {sans:?}: no SPIFFE ID of trust domain {}",
                self.trust_domain
            )));
        }
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!(delegate inner);
}

/// The source side's server-certificate verifier: the chain must verify to
/// the mesh root (server-auth EKU, validity; rustls'
/// `verify_server_cert_signed_by_trust_anchor`), and one URI SAN must equal
/// one of the expected identities. No host-name check, as ztunnel.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: Vec<String>,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// Accepts servers with one of `expected` (SPIFFE IDs or a service's
    /// `subjectAltNames`) chained to `roots`.
    pub fn new(roots: RootCertStore, expected: Vec<String>) -> Self {
        Self {
            roots: Arc::new(roots),
            expected,
            algs: provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        let sans = uri_sans(end_entity);
        if !sans.iter().any(|u| self.expected.contains(u)) {
            return Err(reject(format!(
                "server URI SANs {sans:?}, expected one of {:?}",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!(algorithms algs);
}

/// The server's certificate for one workload, looked up in the
/// [`CertStore`] at every handshake so a renewal takes effect at once; the
/// signing key is rebuilt only when the certificate changed.
pub struct StoreResolver {
    store: CertStore,
    id: SpiffeId,
    cache: Mutex<Option<(Arc<WorkloadCert>, Arc<CertifiedKey>)>>,
}

impl std::fmt::Debug for StoreResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreResolver")
            .field("id", &self.id.to_string())
            .finish_non_exhaustive()
    }
}

impl StoreResolver {
    /// Serves the current certificate of `id` from `store`.
    pub fn new(store: CertStore, id: SpiffeId) -> Self {
        Self {
            store,
            id,
            cache: Mutex::new(None),
        }
    }

    /// The certified key of the current certificate, if the node has one.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        let cert = self.store.get(&self.id)?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((c, k)) = cache.as_ref() {
            if Arc::ptr_eq(c, &cert) {
                return Some(k.clone());
            }
        }
        let key = cert.certified_key().ok()?;
        *cache = Some((cert, key.clone()));
        Some(key)
    }
}

impl ResolvesServerCert for StoreResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // SNI is ignored (ztunnel): the listener is the workload's.
        let key = self.current();
        if key.is_none() {
            tracing::warn!(identity = %self.id, "HBONE handshake refused: no certificate for this workload yet");
        }
        key
    }
}

/// The destination side's rustls config: serves `resolver`'s certificate,
/// requires a client certificate ([`SpiffeClientVerifier`]), TLS 1.3 only,
/// ALPN `h2`, no session resumption (no tickets, no session cache).
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    roots: RootCertStore,
    trust_domain: &str,
) -> Result<Arc<rustls::ServerConfig>, HboneError> {
    let verifier = SpiffeClientVerifier::new(roots, trust_domain)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| HboneError::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// The source side's rustls config: presents `cert` (the source workload's
/// chain), accepts only a server with one of `expected` as URI SAN, TLS
/// 1.3 only, ALPN `h2`, no SNI, no resumption.
pub fn client_config(
    cert: &WorkloadCert,
    roots: RootCertStore,
    expected: Vec<String>,
) -> Result<Arc<rustls::ClientConfig>, HboneError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| HboneError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(roots, expected)))
        .with_client_auth_cert(cert.chain.clone(), cert.private_key())
        .map_err(|e| HboneError::Config(format!("client certificate: {e}")))?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    cfg.enable_sni = false;
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}
