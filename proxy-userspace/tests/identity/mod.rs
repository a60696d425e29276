//! Harness of the identity tests: a CA on loopback (in-process), Pods
//! compiled from YAML, node clients, openssl, temp directories.
#![allow(dead_code)]
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use strait::identity::ca::{self, Authority, CaService, CaSettings, Caller, TokenSource};
use strait::identity::client::{CaClient, CaClientConfig, NodeToken};
use strait::telemetry::identity::CaMetrics;
use strait_config::snapshot::MeshSnapshot;

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "strait-identity-{tag}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Pods as `(namespace, name, service account, node, ip)`, as Kubernetes
/// Pod objects (`spec.nodeName`, `spec.serviceAccountName`, `status.podIP`).
pub fn pods_yaml(pods: &[(&str, &str, &str, &str, &str)]) -> String {
    pods.iter()
        .map(|(ns, name, sa, node, ip)| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}\nspec:\n  serviceAccountName: {sa}\n  nodeName: {node}\n  containers: [{{name: app, image: app}}]\nstatus: {{phase: Running, podIP: {ip}}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The snapshot compiled from `yaml`.
pub fn snapshot(yaml: &str) -> Arc<ArcSwap<MeshSnapshot>> {
    let loaded = strait_config::load::load_str(yaml, "pods.yaml");
    assert!(
        loaded.diagnostics.iter().all(|d| !d.is_error()),
        "{:?}",
        loaded.diagnostics
    );
    let (snap, _) = strait_config::compile(&loaded.resources);
    Arc::new(ArcSwap::from_pointee(snap))
}

/// The default pods: reviews (sa bookinfo-reviews) and ratings on node-a,
/// productpage on node-b.
pub fn default_pods() -> String {
    pods_yaml(&[
        (
            "default",
            "reviews-v1-abc",
            "bookinfo-reviews",
            "node-a",
            "10.1.0.5",
        ),
        (
            "default",
            "ratings-v1-abc",
            "bookinfo-ratings",
            "node-a",
            "10.1.0.6",
        ),
        (
            "default",
            "productpage-v1-abc",
            "bookinfo-productpage",
            "node-b",
            "10.1.1.5",
        ),
    ])
}

pub const TOKEN_A: &str = "token-of-node-a-0123456789";
pub const TOKEN_B: &str = "token-of-node-b-0123456789";
/// A workload's own token (spiffe://cluster.local/ns/default/sa/bookinfo-productpage).
pub const TOKEN_PRODUCTPAGE: &str = "token-of-productpage-0123456789";

/// A CA serving on loopback until dropped.
pub struct TestCa {
    pub addr: SocketAddr,
    pub root_pem: String,
    pub metrics: CaMetrics,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestCa {
    /// Starts `authority` with tokens A → node-a, B → node-b (or `tokens`)
    /// and the pods of `yaml`.
    pub async fn start(
        authority: Authority,
        settings: CaSettings,
        tokens: TokenSource,
        yaml: &str,
    ) -> TestCa {
        Self::start_at(
            "127.0.0.1:0".parse().unwrap(),
            authority,
            settings,
            tokens,
            yaml,
        )
        .await
    }

    /// [`TestCa::start`] on a given address (a restart on the same port).
    pub async fn start_at(
        at: SocketAddr,
        authority: Authority,
        settings: CaSettings,
        tokens: TokenSource,
        yaml: &str,
    ) -> TestCa {
        let metrics = CaMetrics::default();
        let svc = CaService::new(
            authority,
            settings,
            tokens,
            Arc::new(snapshot(yaml)),
            metrics.clone(),
        );
        let root_pem = svc.root_pem();
        let listener = tokio::net::TcpListener::bind(at).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            ca::serve(svc, listener, &[], async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestCa {
            addr,
            root_pem,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    /// Default settings, static tokens for node-a and node-b, default pods.
    pub async fn simple(authority: Authority) -> TestCa {
        Self::start(
            authority,
            CaSettings::default(),
            static_tokens(),
            &default_pods(),
        )
        .await
    }

    /// A client of this CA using `token`, asking for `ttl`.
    pub fn client(&self, token: &str, ttl: Duration) -> CaClient {
        CaClient::new(CaClientConfig {
            address: format!("https://127.0.0.1:{}", self.addr.port()),
            root_pem: self.root_pem.clone(),
            token: NodeToken::Static(token.into()),
            cluster_id: "Kubernetes".into(),
            ttl,
        })
        .unwrap()
    }

    /// Stops serving (new connections are refused).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

pub fn static_tokens() -> TokenSource {
    TokenSource::Static(Arc::new(
        [
            (TOKEN_A.to_string(), Caller::Node("node-a".into())),
            (TOKEN_B.to_string(), Caller::Node("node-b".into())),
            (
                TOKEN_PRODUCTPAGE.to_string(),
                Caller::Workload(strait::identity::SpiffeId::new(
                    "cluster.local",
                    "default",
                    "bookinfo-productpage",
                )),
            ),
        ]
        .into_iter()
        .collect(),
    ))
}

/// Runs openssl in `dir`; (success, stdout + stderr).
pub fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed by `cargo xtask setup`");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Runs openssl and panics with its output when it fails.
pub fn openssl_ok(dir: &Path, args: &[&str]) -> String {
    let (ok, text) = openssl(dir, args);
    assert!(ok, "openssl {args:?} failed:\n{text}");
    text
}
