//! JWKS: parsed key sets, inline or fetched from `jwksUri`. A fetched set
//! is shared by every policy naming the URI, refreshed every 20 minutes
//! (Envoy's `cache_duration` as Istio sets it) by a thread of its own, and
//! the last good set is kept when a fetch fails (retried with backoff
//! from 1 s to 60 s meanwhile).
//!
//! `https://` URIs are fetched with rustls (ring), trusting the system's
//! CA certificates (`rustls-native-certs`), the PEM file named by
//! `STRAIT_JWKS_CA` ([`JWKS_CA_ENV`]) and any CA added with
//! [`add_trusted_ca`]; the server's certificate must be valid for the URI's
//! host.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::policy::PolicyError;

/// How often a fetched JWKS is refreshed.
pub const REFRESH: Duration = Duration::from_secs(20 * 60);

/// One usable key.
pub struct Key {
    /// `kid`.
    pub kid: Option<String>,
    /// `alg`, when the JWK pins one.
    pub alg: Option<Algorithm>,
    /// Key family.
    family: Family,
    /// The key.
    pub key: DecodingKey,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Rsa,
    Ec,
    Okp,
    Oct,
}

fn family_of(alg: Algorithm) -> Family {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Family::Rsa,
        ES256 | ES384 => Family::Ec,
        EdDSA => Family::Okp,
        HS256 | HS384 | HS512 => Family::Oct,
    }
}

impl Key {
    /// Whether the key may verify a token signed with `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.alg.is_none_or(|a| a == alg) && self.family == family_of(alg)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .finish()
    }
}

/// A parsed key set.
#[derive(Debug, Default)]
pub struct KeySet {
    /// Keys (those jsonwebtoken can use; others are skipped with a warning).
    pub keys: Vec<Key>,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`, or one JWK). Errors: not
    /// JSON, or no usable key.
    pub fn parse(json: &str) -> Result<KeySet, PolicyError> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| PolicyError::Jwks(format!("not JSON: {e}")))?;
        let list: Vec<serde_json::Value> = match v.get("keys") {
            Some(serde_json::Value::Array(a)) => a.clone(),
            _ if v.get("kty").is_some() => vec![v.clone()],
            _ => return Err(PolicyError::Jwks("missing \"keys\"".into())),
        };
        let mut keys = Vec::new();
        for (i, k) in list.into_iter().enumerate() {
            let jwk: Jwk = match serde_json::from_value(k) {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!("JWKS key {i} skipped: {e}");
                    continue;
                }
            };
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                AlgorithmParameters::OctetKeyPair(_) => Family::Okp,
                AlgorithmParameters::OctetKey(_) => Family::Oct,
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            match DecodingKey::from_jwk(&jwk) {
                Ok(key) => keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    family,
                    key,
                }),
                Err(e) => tracing::warn!("JWKS key {i} skipped: {e}"),
            }
        }
        if keys.is_empty() {
            return Err(PolicyError::Jwks("no usable key".into()));
        }
        Ok(KeySet { keys })
    }
}

/// A `jwksUri` and its last good key set.
#[derive(Debug)]
pub struct RemoteJwks {
    /// The URI.
    pub uri: String,
    /// Last good set (`None` until the first successful fetch).
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Last fetch error, for `strait x authz check`.
    pub last_error: Mutex<Option<String>>,
}

impl RemoteJwks {
    /// The last good key set.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.read().ok()?.clone()
    }

    /// Installs a fetched set (tests, and the refresher).
    pub fn set(&self, ks: KeySet) {
        if let Ok(mut k) = self.keys.write() {
            *k = Some(Arc::new(ks));
        }
    }
}

/// Where a rule's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `jwks` (parsed at snapshot swap); `Err` keeps the parse error.
    Inline(Result<Arc<KeySet>, String>),
    /// `jwksUri`.
    Remote(Arc<RemoteJwks>),
}

impl KeySource {
    /// The keys usable now; `None` when a remote set was never fetched or
    /// the inline set is broken (Envoy: `Jwks remote fetch is failed`).
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        match self {
            KeySource::Inline(k) => k.as_ref().ok().cloned(),
            KeySource::Remote(r) => r.keys(),
        }
    }
}

fn registry() -> &'static Mutex<HashMap<String, Weak<RemoteJwks>>> {
    static R: OnceLock<Mutex<HashMap<String, Weak<RemoteJwks>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// The shared fetcher of `uri`: one per URI while any policy uses it
/// (kept across snapshot swaps, so a reload does not refetch). Starts the
/// refresh thread the first time; the thread ends once no policy holds it.
pub fn remote(uri: &str, timeout: Duration) -> Arc<RemoteJwks> {
    let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = reg.get(uri).and_then(Weak::upgrade) {
        return r;
    }
    let r = Arc::new(RemoteJwks {
        uri: uri.to_string(),
        keys: RwLock::new(None),
        last_error: Mutex::new(None),
    });
    reg.retain(|_, w| w.strong_count() > 0);
    reg.insert(uri.to_string(), Arc::downgrade(&r));
    let weak = Arc::downgrade(&r);
    let spawned = std::thread::Builder::new()
        .name("strait-jwks".into())
        .spawn(move || refresher(weak, timeout));
    if let Err(e) = spawned {
        tracing::error!(uri, "cannot start the JWKS fetcher: {e}");
    }
    r
}

fn refresher(weak: Weak<RemoteJwks>, timeout: Duration) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    // After a failed fetch: 1 s doubling to 60 s, reset by a success.
    let retries = || {
        ExponentialBuilder::new()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(60))
            .without_max_times()
            .build()
    };
    let mut backoff = retries();
    loop {
        let Some(r) = weak.upgrade() else { return };
        let uri = r.uri.clone();
        let res = rt.block_on(fetch(&uri, timeout));
        let wait = match res.and_then(|body| KeySet::parse(&body).map_err(|e| e.to_string())) {
            Ok(ks) => {
                tracing::info!(uri, keys = ks.keys.len(), "JWKS fetched");
                r.set(ks);
                *r.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                backoff = retries();
                REFRESH
            }
            Err(e) => {
                let kept = r.keys().is_some();
                tracing::warn!(uri, kept_last_good = kept, "JWKS fetch failed: {e}");
                *r.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                backoff.next().unwrap_or(Duration::from_secs(60))
            }
        };
        drop(r);
        // Sleep in slices so the thread ends soon after its last user.
        let until = std::time::Instant::now() + wait;
        while std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(500).min(wait));
            if weak.strong_count() == 0 {
                return;
            }
        }
    }
}

/// Names a PEM file of extra CA certificates trusted for `https://`
/// `jwksUri` fetches (beside the system's), e.g. a private issuer's CA.
pub const JWKS_CA_ENV: &str = "STRAIT_JWKS_CA";

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

fn extra_roots() -> &'static RwLock<Vec<rustls_pki_types::CertificateDer<'static>>> {
    static R: OnceLock<RwLock<Vec<rustls_pki_types::CertificateDer<'static>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn pem_certs(pem: &[u8]) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE in PEM".into());
    }
    Ok(certs)
}

/// Trusts the CA certificates of `pem` for `https://` `jwksUri` fetches
/// from now on (this process). Errors: no certificate in `pem`.
pub fn add_trusted_ca(pem: &[u8]) -> Result<(), PolicyError> {
    let certs = pem_certs(pem).map_err(PolicyError::Jwks)?;
    extra_roots()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .extend(certs);
    Ok(())
}

/// The TLS client configuration of `https://` fetches: system roots, then
/// `STRAIT_JWKS_CA`, then [`add_trusted_ca`]'s. Built per fetch (every 20
/// minutes), so a changed CA file is picked up.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Ok(path) = std::env::var(JWKS_CA_ENV) {
        let pem = std::fs::read(&path).map_err(|e| format!("{JWKS_CA_ENV}={path}: {e}"))?;
        let certs = pem_certs(&pem).map_err(|e| format!("{JWKS_CA_ENV}={path}: {e}"))?;
        roots.add_parsable_certificates(certs);
    }
    roots.add_parsable_certificates(
        extra_roots()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned(),
    );
    if roots.is_empty() {
        return Err(format!(
            "no trusted CA certificates (system store empty; set {JWKS_CA_ENV})"
        ));
    }
    // The process's crypto provider (ring: the only one Strait builds).
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// GETs `uri` (`http://` or `https://`) over one HTTP/1.1 connection;
/// the body must be a 2xx answer of at most [`MAX_JWKS_BYTES`], received
/// within `timeout`.
pub async fn fetch(uri: &str, timeout: Duration) -> Result<String, String> {
    tokio::time::timeout(timeout, get(uri))
        .await
        .map_err(|_| format!("timeout after {timeout:?}"))?
}

async fn get(uri: &str) -> Result<String, String> {
    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;
    let u: http::Uri = uri.parse().map_err(|e| format!("bad URI: {e}"))?;
    let https = match u.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("jwksUri must be http:// or https://".into()),
    };
    let host = u.host().ok_or("jwksUri has no host")?.to_string();
    let port = u.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = connect(&bare, port)
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let authority = u.authority().map_or(host.clone(), |a| a.to_string());
    let path = u.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = if https {
        let name = rustls_pki_types::ServerName::try_from(bare.clone())
            .map_err(|e| format!("bad TLS server name {bare:?}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(tls_config()?)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
        send(TokioIo::new(tls), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body: {e} (limit {MAX_JWKS_BYTES} bytes)"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|e| e.to_string())
}

/// The fetcher's connection to `host:port`, through the mesh's outbound
/// decision ([`crate::policy::ext_authz::dial`]) for each resolved
/// address: plain TCP to a destination outside the mesh (as istiod, which
/// fetches JWKS from outside the mesh); a meshed workload is refused, never
/// reached in plain text: the fetch is made for no workload, so there is
/// no identity to present (`REFUSE_UNKNOWN_SOURCE`). Serve such keys
/// from outside the mesh or inline them (`jwks`).
async fn connect(
    host: &str,
    port: u16,
) -> std::io::Result<Box<dyn crate::policy::ext_authz::CheckIo>> {
    use crate::policy::ext_authz::{dial, Dialed};
    let unspecified = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match dial(unspecified, addr, Default::default(), host).await {
            Ok(Dialed::Plain) => match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => return Ok(Box::new(s)),
                Err(e) => last = Some(e),
            },
            Ok(Dialed::Stream(s)) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}

async fn send<T>(
    io: T,
    req: http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tx.send_request(req).await.map_err(|e| e.to_string())
}
