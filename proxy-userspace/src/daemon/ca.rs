//! `strait ca serve`: Strait's CA on its own (istiod's CA role, port 15012),
//! for nodes running `strait run --ca-address` (or ztunnels).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;

use crate::admin::AdminSource;
use crate::identity::ca::{self, Authority, CaService, CaSettings, NodePods, TokenSource};
use crate::identity::CertInfo;
use crate::sources::ConfigStore;
use crate::telemetry::Metrics;

/// Who the CA's callers are and which pods run where.
#[derive(Clone, Debug)]
pub enum CaAuthArgs {
    /// Without Kubernetes: a tokens file and a config directory.
    Files {
        /// `TOKEN NODE-NAME` per line.
        tokens: PathBuf,
        /// The config directory whose Pods say which pods run on which node.
        config: PathBuf,
    },
    /// Under Kubernetes: service-account tokens (TokenReview) and the API
    /// server's Pods.
    Kube {
        /// The kubeconfig; `None`: in-cluster.
        kubeconfig: Option<PathBuf>,
        /// Audiences a token must be valid for.
        audiences: Vec<String>,
        /// Node accounts (namespace, name) that may obtain identities of
        /// pods on their node.
        trusted_node_accounts: Vec<(String, String)>,
    },
}

/// Settings of `strait ca serve`.
#[derive(Clone, Debug)]
pub struct CaServeArgs {
    /// Istio's plugged-in CA layout, or where a generated root is kept.
    pub ca_dir: PathBuf,
    /// Where Istio's CA API is served (TLS).
    pub listen: SocketAddr,
    /// How callers authenticate and where the pods come from.
    pub auth: CaAuthArgs,
    /// Trust domain.
    pub trust_domain: String,
    /// Signing settings.
    pub settings: CaSettings,
    /// Metrics (`/metrics`, `/stats/prometheus`) and `/ready`.
    pub monitoring: SocketAddr,
    /// Extra DNS names / IPs for the CA's serving certificate.
    pub server_names: Vec<String>,
}

struct CaAdmin {
    metrics: Arc<Metrics>,
    pods: Arc<dyn NodePods>,
    root: CertInfo,
    signing: CertInfo,
    origin: ca::Origin,
    trust_domain: String,
}

impl AdminSource for CaAdmin {
    /// Ready once the pods are known (under Kubernetes: the first list).
    fn ready(&self) -> bool {
        self.pods.ready()
    }

    /// The CA's public material and how many pods it knows per node.
    fn config_dump(&self) -> serde_json::Value {
        let per_node = self.pods.pods_per_node();
        serde_json::json!({
            "trust_domain": self.trust_domain,
            "origin": self.origin,
            "root": self.root,
            "signing_certificate": self.signing,
            "pods_per_node": per_node,
        })
    }

    fn clusters(&self) -> String {
        String::new()
    }

    fn prometheus(&self) -> String {
        self.metrics.encode()
    }
}

/// Runs the CA until SIGTERM/SIGINT.
pub fn serve_ca(args: CaServeArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(args))
}

async fn run(args: CaServeArgs) -> anyhow::Result<()> {
    // Before anything listens: a SIGTERM once the CA answers drains it
    // rather than kill it ([`super::shutdown`]).
    let stop = super::shutdown::Shutdown::install()?;
    let authority = Authority::load_or_generate(&args.ca_dir, &args.trust_domain)?;
    let (signing, root) = authority.describe();
    tracing::info!(
        dir = %args.ca_dir.display(), origin = ?authority.origin(), root_serial = %root.serial,
        root_not_after = %root.not_after, "CA: root loaded"
    );
    let (tokens, pods, _guard) = match &args.auth {
        CaAuthArgs::Files { tokens, config } => files_auth(tokens, config, &args.trust_domain)?,
        CaAuthArgs::Kube {
            kubeconfig,
            audiences,
            trusted_node_accounts,
        } => {
            let client = crate::sources::kube::client(kubeconfig.as_deref())
                .await
                .context("connecting to the Kubernetes API server")?;
            let (auth, index, task) = crate::sources::kube::ca_auth::start(
                client,
                audiences.clone(),
                trusted_node_accounts.clone(),
                &args.trust_domain,
            );
            tracing::info!(
                ?audiences, trusted_node_accounts = ?trusted_node_accounts,
                "CA: callers authenticate with service-account tokens (TokenReview); pods from the API server"
            );
            let pods: Arc<dyn NodePods> = index;
            (TokenSource::Review(auth), pods, Guard::Task(task))
        }
    };
    let metrics = Arc::new(Metrics::with_ca());
    let origin = authority.origin();
    let svc = CaService::new(
        authority,
        args.settings.clone(),
        tokens,
        pods.clone(),
        metrics.ca.clone().unwrap_or_default(),
    );
    let admin = crate::admin::bind(args.monitoring).await?;
    let admin_src = Arc::new(CaAdmin {
        metrics,
        pods,
        root,
        signing,
        origin,
        trust_domain: args.trust_domain.clone(),
    });
    tokio::spawn(crate::admin::serve(admin, admin_src));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot listen on {}: {e} (pass --listen ADDR)", args.listen)
        })?;
    tracing::info!(listen = %args.listen, monitoring = %args.monitoring, "CA: serving istio.v1.auth.IstioCertificateService");
    ca::serve(svc, listener, &args.server_names, stop.wait()).await?;
    tracing::info!("CA: stopped");
    Ok(())
}

/// Keeps the CA's pod source running.
enum Guard {
    /// The config directory's watch (its reload thread holds the rest).
    Files,
    /// The API server's Pod watcher.
    Task(tokio::task::JoinHandle<()>),
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Task(t) = self {
            t.abort();
        }
    }
}

/// Without Kubernetes: the tokens file (checked now, read per request) and
/// the config directory's Pods (watched).
fn files_auth(
    tokens: &std::path::Path,
    config: &std::path::Path,
    trust_domain: &str,
) -> anyhow::Result<(TokenSource, Arc<dyn NodePods>, Guard)> {
    anyhow::ensure!(
        config.is_dir(),
        "--config {}: not a directory (the CA reads Pods from it to know which pods run on which node)",
        config.display()
    );
    // Fail at start on a malformed tokens file; it is read again per request.
    let text = std::fs::read_to_string(tokens)
        .with_context(|| format!("reading --tokens {}", tokens.display()))?;
    let n = crate::identity::ca::auth::parse_tokens(tokens, &text)?.len();
    tracing::info!(tokens = n, file = %tokens.display(), "CA: callers authenticate with the tokens file");
    let mut store = ConfigStore::new(config);
    let snapshot = Arc::new(ArcSwap::from_pointee(
        super::compile(&mut store)
            .map(|(snap, _)| snap)
            .unwrap_or_default(),
    ));
    super::identity::warn_trust_domain(&snapshot.load(), trust_domain);
    let (watch, changes) = super::watch::watch(config, Default::default())?;
    let snap = snapshot.clone();
    // Reloads on their own thread, off the serving path (see the daemon).
    std::thread::Builder::new()
        .name("strait-ca-reload".into())
        .spawn(move || {
            let _watch = watch;
            while super::watch::next_burst(&changes) {
                if let Some((s, _)) = super::compile(&mut store) {
                    snap.store(Arc::new(s));
                    tracing::debug!("CA: config reloaded");
                }
            }
        })
        .context("starting the CA's reload thread")?;
    Ok((
        TokenSource::File(tokens.to_path_buf()),
        Arc::new(snapshot),
        Guard::Files,
    ))
}
