//! `strait ca serve`: Strait's CA on its own (istiod's CA role, port 15012),
//! for nodes running `strait run --ca-address` (or ztunnels).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use strait_config::snapshot::MeshSnapshot;

use crate::admin::AdminSource;
use crate::identity::ca::{self, Authority, CaService, CaSettings, TokenSource};
use crate::identity::CertInfo;
use crate::sources::ConfigStore;
use crate::telemetry::Metrics;

/// Settings of `strait ca serve`.
#[derive(Clone, Debug)]
pub struct CaServeArgs {
    /// Istio's plugged-in CA layout, or where a generated root is kept.
    pub ca_dir: PathBuf,
    /// Where Istio's CA API is served (TLS).
    pub listen: SocketAddr,
    /// `TOKEN NODE-NAME` per line.
    pub tokens: PathBuf,
    /// The config directory whose Pods say which pods run on which node.
    pub config: PathBuf,
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
    snapshot: Arc<ArcSwap<MeshSnapshot>>,
    root: CertInfo,
    signing: CertInfo,
    origin: ca::Origin,
    trust_domain: String,
}

impl AdminSource for CaAdmin {
    fn ready(&self) -> bool {
        true
    }

    /// The CA's public material and how many pods it knows per node.
    fn config_dump(&self) -> serde_json::Value {
        let mut per_node = std::collections::BTreeMap::<String, usize>::new();
        for w in self.snapshot.load().workloads.values() {
            if let Some(n) = &w.node {
                *per_node.entry(n.clone()).or_default() += 1;
            }
        }
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
    anyhow::ensure!(
        args.config.is_dir(),
        "--config {}: not a directory (the CA reads Pods from it to know which pods run on which node)",
        args.config.display()
    );
    // Fail at start on a malformed tokens file; it is read again per request.
    let text = std::fs::read_to_string(&args.tokens)
        .with_context(|| format!("reading --tokens {}", args.tokens.display()))?;
    let n = crate::identity::ca::auth::parse_tokens(&args.tokens, &text)?.len();
    let mut store = ConfigStore::new(&args.config);
    let snapshot = Arc::new(ArcSwap::from_pointee(
        super::compile(&mut store)
            .map(|(snap, _)| snap)
            .unwrap_or_default(),
    ));
    super::identity::warn_trust_domain(&snapshot.load(), &args.trust_domain);
    let authority = Authority::load_or_generate(&args.ca_dir, &args.trust_domain)?;
    let (signing, root) = authority.describe();
    tracing::info!(
        dir = %args.ca_dir.display(), origin = ?authority.origin(), root_serial = %root.serial,
        root_not_after = %root.not_after, tokens = n, "CA: root loaded"
    );
    let metrics = Arc::new(Metrics::with_ca());
    let origin = authority.origin();
    let svc = CaService::new(
        authority,
        args.settings.clone(),
        TokenSource::File(args.tokens.clone()),
        Arc::new(snapshot.clone()),
        metrics.ca.clone().unwrap_or_default(),
    );
    let admin = crate::admin::bind(args.monitoring).await?;
    let admin_src = Arc::new(CaAdmin {
        metrics,
        snapshot: snapshot.clone(),
        root,
        signing,
        origin,
        trust_domain: args.trust_domain.clone(),
    });
    tokio::spawn(crate::admin::serve(admin, admin_src));
    let (watch, changes) = super::watch::watch(&args.config)?;
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
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot listen on {}: {e} (pass --listen ADDR)", args.listen)
        })?;
    tracing::info!(listen = %args.listen, monitoring = %args.monitoring, "CA: serving istio.v1.auth.IstioCertificateService");
    ca::serve(svc, listener, &args.server_names, super::shutdown_signal()).await?;
    tracing::info!("CA: stopped");
    Ok(())
}
