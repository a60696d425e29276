//! The CA: Istio's CA API (`istio.v1.auth.IstioCertificateService/CreateCertificate`)
//! over TLS, signing workload certificates for authenticated node proxies.
//!
//! Follows istiod's `security/pkg/server/ca/server.go`: authenticate the
//! caller (bearer token → node), check the `ImpersonatedIdentity` the node
//! asks for against the pods scheduled on it, check the TTL against the
//! maximum, sign, answer leaf first and root last. Refusals carry a gRPC
//! status with a message saying why and are logged (never the token).
pub mod auth;
pub mod authority;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;

pub use auth::{AuthFailure, AuthFuture, Caller, NodePods, TokenAuthenticator, TokenSource};
pub use authority::{Authority, Origin, SignError};

use super::proto::{
    IstioCertificateRequest, IstioCertificateResponse, CREATE_CERTIFICATE_PATH,
    IMPERSONATED_IDENTITY, SERVICE_NAME,
};
use super::{IdentityError, SpiffeId};
use crate::telemetry::identity::{unix_secs, CaMetrics};

/// Istio's CA port.
pub const DEFAULT_CA_PORT: u16 = 15012;
/// Default workload certificate lifetime (Istio's `DEFAULT_WORKLOAD_CERT_TTL`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default longest lifetime a caller may ask for (Istio's `MAX_WORKLOAD_CERT_TTL`, 90 days).
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// How the CA signs.
#[derive(Clone, Debug)]
pub struct CaSettings {
    /// Lifetime when the request asks for none (`validity_duration <= 0`).
    pub default_ttl: Duration,
    /// Longest lifetime; longer requests are refused with `InvalidArgument`
    /// (istiod's `TTL_ERROR`).
    pub max_ttl: Duration,
}

impl Default for CaSettings {
    fn default() -> Self {
        CaSettings {
            default_ttl: DEFAULT_TTL,
            max_ttl: DEFAULT_MAX_TTL,
        }
    }
}

struct Inner {
    authority: Authority,
    settings: CaSettings,
    tokens: TokenSource,
    pods: Arc<dyn NodePods>,
    metrics: CaMetrics,
}

/// The gRPC service (a tower `Service`, as tonic's generated servers are).
#[derive(Clone)]
pub struct CaService {
    inner: Arc<Inner>,
}

impl NamedService for CaService {
    const NAME: &'static str = SERVICE_NAME;
}

/// `authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(md: &tonic::metadata::MetadataMap) -> Option<&str> {
    let v = md.get("authorization")?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86400) {
        format!("{}d", s / 86400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else {
        format!("{s}s")
    }
}

impl CaService {
    /// A CA signing with `authority`, authenticating with `tokens`, allowing
    /// a node the identities `pods` says run on it.
    pub fn new(
        authority: Authority,
        settings: CaSettings,
        tokens: TokenSource,
        pods: Arc<dyn NodePods>,
        metrics: CaMetrics,
    ) -> Self {
        let (signing, root) = authority.describe();
        metrics.root_expiry.set(unix_secs(root.not_after()));
        metrics.chain_expiry.set(unix_secs(signing.not_after()));
        CaService {
            inner: Arc::new(Inner {
                authority,
                settings,
                tokens,
                pods,
                metrics,
            }),
        }
    }

    /// The mesh root as PEM.
    pub fn root_pem(&self) -> String {
        self.inner.authority.root_pem()
    }

    /// Which pods run where (the CA's `/ready` and `/config_dump`).
    pub fn node_pods(&self) -> &Arc<dyn NodePods> {
        &self.inner.pods
    }

    /// The authority (for a serving certificate).
    pub fn authority(&self) -> &Authority {
        &self.inner.authority
    }

    /// `CreateCertificate`.
    pub async fn create_certificate(
        &self,
        req: tonic::Request<IstioCertificateRequest>,
    ) -> Result<tonic::Response<IstioCertificateResponse>, tonic::Status> {
        use tonic::Status;
        let m = &self.inner.metrics;
        m.csr.inc();
        let peer = req
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let refuse = |status: Status| {
            tracing::warn!(%peer, code = ?status.code(), "CA: refused: {}", status.message());
            Err(status)
        };
        let Some(token) = bearer(req.metadata()) else {
            m.authn_failure.inc();
            return refuse(Status::unauthenticated(
                "request authenticate failure: no `authorization: Bearer <token>` metadata",
            ));
        };
        let caller = match self.inner.tokens.authenticate(token).await {
            Ok(c) => c,
            Err(AuthFailure::Unauthenticated(why)) => {
                m.authn_failure.inc();
                return refuse(Status::unauthenticated(why));
            }
            Err(AuthFailure::Unavailable(why)) => {
                m.authn_failure.inc();
                return refuse(Status::unavailable(why));
            }
        };
        let body = req.get_ref();
        let wanted = match (body.metadata_str(IMPERSONATED_IDENTITY), &caller) {
            (Some(w), _) => match w.parse::<SpiffeId>() {
                Ok(id) => id,
                Err(e) => {
                    m.id_extraction_err.inc();
                    return refuse(Status::invalid_argument(e.to_string()));
                }
            },
            // istiod: without impersonation the caller gets its own identity.
            (None, Caller::Workload(own)) => own.clone(),
            (None, Caller::Node(node)) => {
                m.id_extraction_err.inc();
                return refuse(Status::unauthenticated(format!(
                    "node {node}: `{IMPERSONATED_IDENTITY}` metadata is required (a node token carries no workload identity)"
                )));
            }
        };
        let id = wanted;
        let td = self.inner.authority.trust_domain();
        if id.trust_domain != td {
            m.authn_failure.inc();
            return refuse(Status::unauthenticated(format!(
                "{caller} may not obtain {id}: trust domain is not {td}"
            )));
        }
        match &caller {
            Caller::Node(node) if !self.inner.pods.runs_on(node, &id) => {
                m.authn_failure.inc();
                return refuse(Status::unauthenticated(format!(
                    "node {node} may not obtain {id}: no pod with service account {} in namespace {} is scheduled on it",
                    id.service_account, id.namespace
                )));
            }
            Caller::Workload(own) if *own != id => {
                m.authn_failure.inc();
                return refuse(Status::unauthenticated(format!(
                    "workload {own} may not obtain {id}"
                )));
            }
            _ => {}
        }
        let s = &self.inner.settings;
        let ttl = if body.validity_duration <= 0 {
            s.default_ttl
        } else {
            Duration::from_secs(body.validity_duration as u64)
        };
        if ttl > s.max_ttl {
            m.sign_error("TTL_ERROR");
            return refuse(Status::invalid_argument(format!(
                "requested TTL {} is greater than the max allowed TTL {}",
                human(ttl),
                human(s.max_ttl)
            )));
        }
        match self.inner.authority.sign(&body.csr, &id, ttl) {
            Ok(chain) => {
                m.success.inc();
                tracing::info!(%peer, %caller, identity = %id, ttl_s = ttl.as_secs(), "CA: issued a workload certificate");
                Ok(tonic::Response::new(IstioCertificateResponse {
                    cert_chain: chain,
                }))
            }
            Err(SignError::Csr(e)) => {
                m.csr_parsing_err.inc();
                m.sign_error("CSR_PARSE_ERROR");
                refuse(Status::invalid_argument(format!("CSR_PARSE_ERROR: {e}")))
            }
            Err(SignError::Sign(e)) => {
                m.sign_error("CERT_GEN_ERROR");
                refuse(Status::internal(format!("CERT_GEN_ERROR: {e}")))
            }
        }
    }
}

struct Unary(CaService);

impl tonic::server::UnaryService<IstioCertificateRequest> for Unary {
    type Response = IstioCertificateResponse;
    type Future = BoxFuture<tonic::Response<IstioCertificateResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<IstioCertificateRequest>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move { svc.create_certificate(request).await })
    }
}

impl<B> Service<http::Request<B>> for CaService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == CREATE_CERTIFICATE_PATH {
            let svc = self.clone();
            Box::pin(async move {
                let codec = tonic_prost::ProstCodec::default();
                let mut grpc = tonic::server::Grpc::new(codec);
                Ok(grpc.unary(Unary(svc), req).await)
            })
        } else {
            let path = req.uri().path().to_string();
            Box::pin(async move {
                Ok(tonic::Status::unimplemented(format!("unknown method {path}")).into_http())
            })
        }
    }
}

/// DNS names the CA's serving certificate always carries (istiod's), so a
/// client that checks `istiod.istio-system.svc` accepts it.
pub const SERVING_DNS: [&str; 3] = [
    "istiod.istio-system.svc",
    "istiod.istio-system.svc.cluster.local",
    "localhost",
];

/// Serves `svc` over TLS on `listener` until `shutdown` resolves. The
/// serving certificate is signed by the CA itself (SANs: [`SERVING_DNS`],
/// `extra_names`, 127.0.0.1, ::1 and the listener's address).
pub async fn serve(
    svc: CaService,
    listener: tokio::net::TcpListener,
    extra_names: &[String],
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), IdentityError> {
    let local: SocketAddr = listener
        .local_addr()
        .map_err(|e| IdentityError::Config(format!("CA listener: {e}")))?;
    let mut dns: Vec<String> = SERVING_DNS.iter().map(|s| s.to_string()).collect();
    let mut ips = vec![
        std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    if !local.ip().is_unspecified() && !ips.contains(&local.ip()) {
        ips.push(local.ip());
    }
    for n in extra_names {
        match n.parse::<std::net::IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(n.clone()),
        }
    }
    // One year; regenerated at every start.
    let (chain, key) =
        svc.authority()
            .serving_cert(&dns, &ips, Duration::from_secs(365 * 24 * 3600))?;
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(chain, key));
    tonic::transport::Server::builder()
        .tls_config(tls)
        .map_err(|e| IdentityError::Config(format!("CA TLS: {e}")))?
        .serve_with_incoming_shutdown(
            svc,
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
        .map_err(|e| IdentityError::Config(format!("CA server on {local}: {e}")))
}
