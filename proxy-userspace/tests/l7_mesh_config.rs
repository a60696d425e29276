//! MeshConfig settings through the real proxy: `outboundTrafficPolicy`
//! (`ALLOW_ANY` passes unknown destinations through, `REGISTRY_ONLY` answers
//! 502 from the `BlackHoleCluster`), `defaultHttpRetryPolicy` (routes
//! without `retries` use it), and a security setting Strait cannot enforce
//! (PeerAuthentication STRICT) failing closed: no traffic reaches the
//! workload it selects.
mod support;

use std::net::SocketAddr;

use support::backend::Backend;
use support::client::Client;
use support::{fresh_ip, MeshBuilder};

fn mesh_config(mesh: &str) -> String {
    let body: String = mesh.lines().map(|l| format!("    {l}\n")).collect();
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n{body}")
}

/// A proxy listener whose connections were headed for `dst`, a destination
/// outside the registry; the status of one request through it, and the
/// upstream cluster in the access log.
async fn unknown_destination(mesh: &str) -> (u16, usize, Option<String>) {
    let mut b = MeshBuilder::new();
    b.service("web", 80, "http", &[("web-1", &[])]).await;
    if !mesh.is_empty() {
        b.yaml(&mesh_config(mesh));
    }
    let m = b.start().await;
    let outside = Backend::start("outside", SocketAddr::new(fresh_ip(), 0))
        .await
        .unwrap();
    let dst = outside.addr;
    let (front, task) = support::front::serve_fixed(m.proxy.clone(), dst).await;
    let r = Client::http1().get(&format!("http://{front}/x"), &[]).await;
    let logs = m.logs().await;
    task.abort();
    let cluster = logs
        .iter()
        .find(|l| l.downstream_local_address == Some(dst))
        .and_then(|l| l.upstream_cluster.as_deref().map(str::to_string));
    (r.status.as_u16(), outside.hits(), cluster)
}

#[tokio::test]
async fn allow_any_passes_unknown_destinations_through() {
    for mesh in ["", "outboundTrafficPolicy: {mode: ALLOW_ANY}"] {
        let (status, hits, cluster) = unknown_destination(mesh).await;
        assert_eq!((status, hits), (200, 1), "mesh config {mesh:?}");
        assert_eq!(cluster.as_deref(), Some("PassthroughCluster"));
    }
}

#[tokio::test]
async fn registry_only_black_holes_unknown_destinations() {
    let (status, hits, cluster) =
        unknown_destination("outboundTrafficPolicy: {mode: REGISTRY_ONLY}").await;
    assert_eq!((status, hits), (502, 0));
    assert_eq!(cluster.as_deref(), Some("BlackHoleCluster"));
}

/// Two 500s then success: Istio's default policy does not retry 500, a mesh
/// `defaultHttpRetryPolicy` with `retryOn: 5xx` does, for routes without
/// `retries`; a route's own `retries` still wins.
#[tokio::test]
async fn default_http_retry_policy_applies_to_routes_without_retries() {
    for (mesh, vs_retries, want) in [
        ("", "", 500),
        (
            "defaultHttpRetryPolicy: {attempts: 3, retryOn: 5xx}",
            "",
            200,
        ),
        (
            "defaultHttpRetryPolicy: {attempts: 3, retryOn: 5xx}",
            "    retries: {attempts: 0}\n",
            500,
        ),
    ] {
        let mut b = MeshBuilder::new();
        b.service("web", 80, "http", &[("web-1", &[])]).await;
        if !mesh.is_empty() {
            b.yaml(&mesh_config(mesh));
        }
        b.yaml(&format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: default}}\nspec:\n  hosts: [web]\n  http:\n  - route: [{{destination: {{host: web}}}}]\n{vs_retries}"));
        let m = b.start().await;
        m.backend("web", "web-1").fail_next(2, 500);
        let r = Client::http1().get(&m.url("web", "/r"), &[]).await;
        assert_eq!(
            r.status.as_u16(),
            want,
            "mesh {mesh:?} route retries {vs_retries:?}"
        );
    }
}

/// A PeerAuthentication STRICT Strait cannot enforce yet (no server-side
/// mTLS) makes the workloads it selects unreachable rather than open: they
/// get no request (503 no healthy upstream); the other one still serves.
#[tokio::test]
async fn unenforceable_strict_mtls_fails_closed() {
    let mut b = MeshBuilder::new();
    b.service("locked", 80, "http", &[("locked-1", &[])]).await;
    b.service("open", 81, "http", &[("open-1", &[])]).await;
    b.yaml("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: default}\nspec:\n  selector: {matchLabels: {app: locked}}\n  mtls: {mode: STRICT}\n");
    let m = b.start().await;
    let c = Client::http1();
    let r = c.get(&m.url("locked", "/"), &[]).await;
    assert_eq!(r.status.as_u16(), 503);
    assert_eq!(m.backend("locked", "locked-1").hits(), 0);
    let logs = m.logs().await;
    assert!(
        logs.iter()
            .any(|l| l.response_code == 503 && l.response_flags.to_string() == "UH"),
        "503 UH in the access log"
    );
    let r = c.get(&m.url("open", "/"), &[]).await;
    assert_eq!(r.status.as_u16(), 200);
}

/// MeshConfig `pathNormalization.normalization` reaches the proxy at start
/// and on every update; absent, Istio's default `BASE` applies.
#[tokio::test]
async fn path_normalization_follows_the_mesh_config() {
    use strait::serve::PathNormalization;
    let mut b = MeshBuilder::new();
    b.service("web", 80, "http", &[("web-1", &[])]).await;
    b.yaml(&mesh_config(
        "pathNormalization: {normalization: MERGE_SLASHES}",
    ));
    let m = b.start().await;
    assert_eq!(
        m.proxy.path_normalization(),
        PathNormalization::MergeSlashes
    );

    let mut b = MeshBuilder::new();
    b.service("web", 80, "http", &[("web-1", &[])]).await;
    let mut m = b.start().await;
    assert_eq!(m.proxy.path_normalization(), PathNormalization::Base);
    m.update(&mesh_config("pathNormalization: {normalization: NONE}"));
    assert_eq!(m.proxy.path_normalization(), PathNormalization::None);
}
