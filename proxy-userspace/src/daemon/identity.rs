//! Workload identity in `strait run`: the node's certificates from a CA
//! (`--ca-address`) or from a CA embedded in the daemon (`--ca-dir`).
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use strait_config::enroll::Enrollment;
use strait_config::snapshot::MeshSnapshot;

use crate::identity::ca::{self, Authority, CaService, CaSettings, Caller, TokenSource};
use crate::identity::client::{CaClient, CaClientConfig, NodeToken};
use crate::identity::{CertStore, SecretManager, SpiffeId};
use crate::telemetry::Metrics;

/// Where the node's certificates come from.
#[derive(Clone, Debug)]
pub enum CaMode {
    /// A CA elsewhere (`strait ca serve`, or istiod): `--ca-address`,
    /// `--ca-root`, `--ca-token-file`.
    Remote {
        /// `https://HOST:PORT`.
        address: String,
        /// PEM root verifying the CA.
        root: PathBuf,
        /// Bearer token file.
        token_file: PathBuf,
    },
    /// The CA runs inside this daemon (`--ca-dir`), for a single node or
    /// the demo; it also serves other nodes on `listen` with `tokens`.
    Embedded {
        /// Istio's plugged-in CA layout, or where a generated root is kept.
        dir: PathBuf,
        /// Where it serves Istio's CA API.
        listen: SocketAddr,
        /// Tokens of other nodes (`TOKEN NODE` lines), if any.
        tokens: Option<PathBuf>,
        /// Signing settings.
        settings: CaSettings,
    },
}

/// Identity settings of `strait run`.
#[derive(Clone, Debug)]
pub struct IdentityArgs {
    /// The CA.
    pub mode: CaMode,
    /// Trust domain of the SPIFFE IDs (`cluster.local`).
    pub trust_domain: String,
    /// Lifetime the node asks for (ztunnel's `SECRET_TTL`, 24 h).
    pub secret_ttl: Duration,
    /// `clusterid` metadata (`Kubernetes`).
    pub cluster_id: String,
}

/// The identities the node needs: one per (namespace, service account) of
/// the **meshed** pods whose `spec.nodeName` is `node` (a pod left out of
/// the mesh, or in a namespace that is not enrolled, gets no certificate:
/// ztunnel's rule, it only serves workloads it captures).
pub fn wanted(
    snap: &MeshSnapshot,
    enrollment: &Enrollment,
    node: &str,
    trust_domain: &str,
) -> BTreeSet<SpiffeId> {
    snap.workloads
        .values()
        .filter(|w| w.node.as_deref() == Some(node))
        .filter(|w| match enrollment.pod(&w.namespace, &w.name) {
            Some(p) => p.meshed(),
            None => enrollment.namespaces.contains(&w.namespace),
        })
        .map(|w| SpiffeId::new(trust_domain, &w.namespace, &w.service_account))
        .collect()
}

/// Logs an error when the mesh config's `trustDomain` is not the one the
/// certificates are issued for (`--trust-domain`): the flag wins, loudly.
pub fn warn_trust_domain(snap: &MeshSnapshot, trust_domain: &str) {
    if snap.mesh.trust_domain != trust_domain {
        tracing::error!(
            mesh_trust_domain = %snap.mesh.trust_domain, flag = %trust_domain,
            "the mesh config's trustDomain differs from --trust-domain: workload certificates use --trust-domain; pass --trust-domain {} to follow the mesh config",
            snap.mesh.trust_domain
        );
    }
}

/// Starts the embedded CA (if any) and the node's secret manager.
pub async fn start(
    args: &IdentityArgs,
    node: &str,
    snapshot: Arc<ArcSwap<MeshSnapshot>>,
    enrollment: &Enrollment,
    metrics: &Metrics,
) -> anyhow::Result<Arc<SecretManager>> {
    warn_trust_domain(&snapshot.load(), &args.trust_domain);
    let (address, root_pem, token) = match &args.mode {
        CaMode::Remote {
            address,
            root,
            token_file,
        } => {
            let root_pem = std::fs::read_to_string(root)
                .with_context(|| format!("reading --ca-root {}", root.display()))?;
            std::fs::metadata(token_file)
                .with_context(|| format!("reading --ca-token-file {}", token_file.display()))?;
            (
                address.clone(),
                root_pem,
                NodeToken::File(token_file.clone()),
            )
        }
        CaMode::Embedded {
            dir,
            listen,
            tokens,
            settings,
        } => {
            anyhow::ensure!(
                args.secret_ttl <= settings.max_ttl,
                "--secret-ttl ({}s) is longer than --ca-max-ttl ({}s): the embedded CA would refuse every request",
                args.secret_ttl.as_secs(),
                settings.max_ttl.as_secs()
            );
            let authority = Authority::load_or_generate(dir, &args.trust_domain)?;
            tracing::info!(dir = %dir.display(), origin = ?authority.origin(), "embedded CA: root loaded");
            // The daemon's own token: random, in memory only.
            let own: String = (0..32)
                .map(|_| format!("{:02x}", rand::random::<u8>()))
                .collect();
            let token_source = match tokens {
                Some(f) => {
                    let text = std::fs::read_to_string(f)
                        .with_context(|| format!("reading --ca-tokens {}", f.display()))?;
                    let mut m = crate::identity::ca::auth::parse_tokens(f, &text)?;
                    m.insert(own.clone(), Caller::Node(node.to_string()));
                    TokenSource::Static(Arc::new(m))
                }
                None => TokenSource::Static(Arc::new(HashMap::from([(
                    own.clone(),
                    Caller::Node(node.to_string()),
                )]))),
            };
            let ca_metrics = metrics.ca.clone().unwrap_or_default();
            let svc = CaService::new(
                authority,
                settings.clone(),
                token_source,
                Arc::new(snapshot.clone()),
                ca_metrics,
            );
            let root_pem = svc.root_pem();
            let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on CA address {listen}: {e} (pass --ca-listen ADDR)")
            })?;
            let local = listener.local_addr()?;
            tokio::spawn(async move {
                if let Err(e) = ca::serve(svc, listener, &[], std::future::pending()).await {
                    tracing::error!("embedded CA stopped: {e}");
                }
            });
            tracing::info!(listen = %local, "embedded CA: serving Istio's CA API");
            let host = if local.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else if local.is_ipv6() {
                format!("[{}]", local.ip())
            } else {
                local.ip().to_string()
            };
            (
                format!("https://{host}:{}", local.port()),
                root_pem,
                NodeToken::Static(own),
            )
        }
    };
    let roots = crate::identity::certs::parse_pem_certs(&root_pem)?;
    let client = CaClient::new(CaClientConfig {
        address,
        root_pem,
        token,
        cluster_id: args.cluster_id.clone(),
        ttl: args.secret_ttl,
    })?;
    let mgr = SecretManager::new(client, CertStore::new(roots), metrics.cert_expiry.clone());
    mgr.set_wanted(&wanted(
        &snapshot.load(),
        enrollment,
        node,
        &args.trust_domain,
    ));
    Ok(mgr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_meshed_pods_on_the_node_get_identities() {
        let pod = |ns: &str, name: &str, sa: &str, node: &str, ip: &str, extra: &str| {
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}{extra}}}}}\nspec: {{serviceAccountName: {sa}, nodeName: {node}, containers: [{{name: c}}]}}\nstatus: {{phase: Running, podIP: {ip}}}\n")
        };
        let yaml = [
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: default, labels: {istio.io/dataplane-mode: ambient}}\n".to_string(),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: legacy}\n".to_string(),
            pod("default", "reviews", "bookinfo-reviews", "node-a", "10.1.0.5", ""),
            pod("default", "mysql", "mysql", "node-a", "10.1.0.6", ", istio.io/dataplane-mode: none"),
            pod("legacy", "old", "old", "node-a", "10.1.0.7", ""),
            pod("default", "ratings", "bookinfo-ratings", "node-b", "10.1.1.5", ""),
        ]
        .join("---\n");
        let loaded = strait_config::load::load_str(&yaml, "pods.yaml");
        let (snap, _) = strait_config::compile(&loaded.resources);
        let enrollment = Enrollment::from_resources(&loaded.resources);
        let ids: Vec<String> = wanted(&snap, &enrollment, "node-a", "cluster.local")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            ids,
            ["spiffe://cluster.local/ns/default/sa/bookinfo-reviews"]
        );
    }
}
