//! The node side: a certificate per service account with a meshed pod on
//! the node, from Istio's CA API, kept in a [`CertStore`] and renewed at
//! half life — what ztunnel's `SecretManager` and `CaClient` do.
pub mod store;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use rustls_pki_types::PrivatePkcs8KeyDer;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub use store::CertStore;

use super::certs::WorkloadCert;
use super::proto::{
    string_struct, IstioCertificateRequest, IstioCertificateResponse, CREATE_CERTIFICATE_PATH,
    IMPERSONATED_IDENTITY,
};
use super::{IdentityError, SpiffeId};
use crate::telemetry::identity::CertExpiry;

/// Where the node's bearer token comes from.
#[derive(Clone)]
pub enum NodeToken {
    /// A file (`--ca-token-file`, ztunnel's `AUTH_TOKEN`), read before every
    /// request so a rotated token is picked up.
    File(PathBuf),
    /// A token held in memory (the CA embedded in the same process).
    Static(String),
}

impl std::fmt::Debug for NodeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeToken::File(p) => write!(f, "File({})", p.display()),
            NodeToken::Static(_) => f.write_str("Static(<redacted>)"),
        }
    }
}

impl NodeToken {
    fn read(&self) -> Result<String, IdentityError> {
        match self {
            NodeToken::Static(t) => Ok(t.clone()),
            NodeToken::File(p) => {
                let t = std::fs::read_to_string(p).map_err(|e| IdentityError::io(p, e))?;
                Ok(t.trim().to_string())
            }
        }
    }
}

/// How the node reaches the CA.
#[derive(Clone, Debug)]
pub struct CaClientConfig {
    /// `https://HOST:PORT` (`--ca-address`, ztunnel's `CA_ADDRESS`).
    pub address: String,
    /// PEM root(s) that verify the CA's serving certificate (`--ca-root`,
    /// ztunnel's `CA_ROOT_CA`); also the node's initial trust bundle.
    pub root_pem: String,
    /// Bearer token.
    pub token: NodeToken,
    /// `clusterid` metadata (ztunnel's `CLUSTER_ID`, default `Kubernetes`).
    pub cluster_id: String,
    /// Lifetime asked for (ztunnel's `SECRET_TTL`, 24 h).
    pub ttl: Duration,
}

/// A client of Istio's CA API.
pub struct CaClient {
    channel: Channel,
    cfg: CaClientConfig,
}

impl CaClient {
    /// A client over TLS verified with `cfg.root_pem`; connects lazily.
    pub fn new(cfg: CaClientConfig) -> Result<Self, IdentityError> {
        if !cfg.address.starts_with("https://") {
            return Err(IdentityError::Config(format!(
                "--ca-address {}: must be https://HOST:PORT (the CA API is served over TLS only)",
                cfg.address
            )));
        }
        if super::certs::parse_pem_certs(&cfg.root_pem)?.is_empty() {
            return Err(IdentityError::Material(
                "--ca-root holds no CERTIFICATE".into(),
            ));
        }
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&cfg.root_pem));
        let channel = Endpoint::from_shared(cfg.address.clone())
            .map_err(|e| IdentityError::Config(format!("--ca-address {}: {e}", cfg.address)))?
            .tls_config(tls)
            .map_err(|e| IdentityError::Config(format!("CA client TLS: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .connect_lazy();
        Ok(CaClient { channel, cfg })
    }

    /// The PEM root(s) the client trusts.
    pub fn root_pem(&self) -> &str {
        &self.cfg.root_pem
    }

    /// Generates an ECDSA P-256 key, sends a CSR for `id` (with
    /// `ImpersonatedIdentity: id`) and returns the verified certificate.
    pub async fn fetch(&self, id: &SpiffeId) -> Result<WorkloadCert, IdentityError> {
        let (key, csr) = super::certs::csr_for(id)?;
        let mut req = tonic::Request::new(IstioCertificateRequest {
            csr,
            validity_duration: self.cfg.ttl.as_secs() as i64,
            metadata: Some(string_struct([(IMPERSONATED_IDENTITY, id.to_string())])),
        });
        let token = self.cfg.token.read()?;
        let md = req.metadata_mut();
        md.insert(
            "authorization",
            format!("Bearer {token}").parse().map_err(|_| {
                IdentityError::Config("the CA token is not a valid header value".into())
            })?,
        );
        if let Ok(v) = self.cfg.cluster_id.parse() {
            md.insert("clusterid", v);
        }
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| IdentityError::Ca(format!("{}: {e}", self.cfg.address)))?;
        let resp: tonic::Response<IstioCertificateResponse> = grpc
            .unary(
                req,
                http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE_PATH),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map_err(|s| IdentityError::Ca(format!("{:?}: {}", s.code(), s.message())))?;
        let pkcs8 = PrivatePkcs8KeyDer::from(key.serialize_der());
        let jitter = rand::random::<f64>() * 0.02 - 0.01;
        WorkloadCert::from_response(
            id.clone(),
            &resp.into_inner().cert_chain,
            pkcs8,
            &key.public_key_der(),
            jitter,
        )
    }
}

/// Keeps one certificate per wanted identity in a [`CertStore`]: fetches
/// it, renews it at half life (±1% jitter), retries with exponential
/// backoff (0.5 s up to 30 s, jittered) while the CA is unreachable — the
/// current certificate keeps serving meanwhile — and drops it when the
/// identity is no longer wanted.
pub struct SecretManager {
    client: Arc<CaClient>,
    store: CertStore,
    expiry: CertExpiry,
    tasks: Mutex<HashMap<SpiffeId, tokio::task::JoinHandle<()>>>,
    /// The runtime the renewal tasks run on (`set_wanted` may be called
    /// from a plain thread, e.g. the daemon's reload thread).
    runtime: tokio::runtime::Handle,
}

impl SecretManager {
    /// A manager filling `store`; `expiry` is the node's
    /// `istio_agent_cert_expiry_seconds` gauge. Must be called inside a
    /// tokio runtime: its renewal tasks run there.
    pub fn new(client: CaClient, store: CertStore, expiry: CertExpiry) -> Arc<Self> {
        Arc::new(SecretManager {
            client: Arc::new(client),
            store,
            expiry,
            tasks: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// The store it fills.
    pub fn store(&self) -> &CertStore {
        &self.store
    }

    /// Sets the identities the node needs (one per service account with a
    /// meshed pod on the node). New ones are fetched in the background;
    /// certificates of identities no longer listed are dropped at once.
    /// May be called from any thread.
    pub fn set_wanted(&self, wanted: &BTreeSet<SpiffeId>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|id, task| {
            let keep = wanted.contains(id);
            if !keep {
                task.abort();
                self.store.remove(id);
                self.expiry.remove(&id.to_string());
                tracing::info!(identity = %id, "no pod left on the node: certificate dropped");
            }
            keep
        });
        for id in wanted {
            if tasks.contains_key(id) {
                continue;
            }
            let task = self.runtime.spawn(keep_fresh(
                id.clone(),
                self.client.clone(),
                self.store.clone(),
                self.expiry.clone(),
            ));
            tasks.insert(id.clone(), task);
        }
    }
}

impl SecretManager {
    /// Waits until every identity passed to [`SecretManager::set_wanted`]
    /// has a certificate in the store, or `limit` has passed (a CA outage
    /// must not keep the node from serving plaintext and L4 traffic).
    /// `true` when all are there. The daemon calls it before `/ready`
    /// says LIVE, so the first tunnelled connections after a start do not
    /// meet a pod without a certificate.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let missing = {
                let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
                tasks
                    .keys()
                    .filter(|id| self.store.get(id).is_none())
                    .count()
            };
            if missing == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    missing,
                    "serving before every workload certificate arrived from the CA"
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SecretManager {
    fn drop(&mut self) {
        for (_, t) in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            t.abort();
        }
    }
}

async fn keep_fresh(id: SpiffeId, client: Arc<CaClient>, store: CertStore, expiry: CertExpiry) {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times();
    loop {
        let fetched = (|| client.fetch(&id))
            .retry(backoff)
            .notify(|e, next| {
                let current = store.get(&id).map(|c| c.leaf.not_after.clone());
                tracing::warn!(
                    identity = %id, retry_in_ms = next.as_millis() as u64,
                    current_not_after = current.as_deref().unwrap_or("none"),
                    "cannot obtain a certificate: {e}"
                );
            })
            .await;
        let Ok(cert) = fetched else { continue };
        let renew_at = cert.renew_at;
        tracing::info!(
            identity = %id, serial = %cert.leaf.serial, not_after = %cert.leaf.not_after,
            renew_at = %super::certs::rfc3339(super::certs::unix(renew_at)),
            "workload certificate installed"
        );
        expiry.set(&id.to_string(), cert.leaf.not_after());
        store.insert(Arc::new(cert));
        let wait = renew_at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .max(Duration::from_millis(500));
        tokio::time::sleep(wait).await;
    }
}
