//! The Kubernetes source at scale (`cargo xtask bench kube`): 10,000
//! Services and 100,000 endpoints (10,000 EndpointSlices of 10) in 100
//! meshed Namespaces, served by an in-process fake API server on loopback
//! (list pages of 500, as kube-runtime's watcher asks for; the watches then
//! stay quiet), read by the daemon's real Kubernetes source
//! (`strait::sources::kube::start`: one kube-runtime watcher per kind,
//! every object loaded and validated as a file's), then compiled into a
//! `MeshSnapshot` as the daemon's first reload does.
//!
//! Prints one JSON line: `{"services","endpoints","objects","sync_ms",
//! "compile_ms","total_ms","rss_before_mb","rss_after_mb","source_rss_mb",
//! "peak_rss_mb","list_requests"}`. `sync_ms`: from starting the source to
//! every kind listed (the daemon's `/ready` waits for it); `source_rss_mb`:
//! resident memory the source and snapshot added (after − before; the
//! fake server's pre-rendered pages are in `before`).
//!
//! `cargo run --release -p strait --example kube_bench -- [--services N]
//! [--endpoints-per-service M]`
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};

// The daemon's allocator, so the figures are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Objects per list path (`/api/v1/services`, ...), as the API server
/// returns them.
fn generate(services: usize, eps: usize) -> HashMap<&'static str, Vec<Value>> {
    let mut m: HashMap<&'static str, Vec<Value>> = HashMap::new();
    for n in 0..100 {
        m.entry("/api/v1/namespaces").or_default().push(json!({
            "metadata": {"name": format!("ns{n}"), "resourceVersion": "1",
                         "labels": {"istio.io/dataplane-mode": "ambient"}}}));
    }
    for i in 0..services {
        let ns = format!("ns{}", i % 100);
        let name = format!("svc{i}");
        let vip = format!("10.{}.{}.{}", 96 + i / 65536, (i / 256) % 256, i % 256);
        m.entry("/api/v1/services").or_default().push(json!({
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "1",
                         "uid": format!("uid-svc-{i}")},
            "spec": {"clusterIP": vip, "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}));
        let endpoints: Vec<Value> = (0..eps)
            .map(|j| {
                let n = i * eps + j;
                json!({"addresses": [format!("10.{}.{}.{}", n / 65536 % 256, n / 256 % 256, n % 256)],
                       "conditions": {"ready": true},
                       "targetRef": {"kind": "Pod", "name": format!("{name}-{j}"), "namespace": ns}})
            })
            .collect();
        m.entry("/apis/discovery.k8s.io/v1/endpointslices")
            .or_default()
            .push(json!({
                "metadata": {"name": format!("{name}-abc"), "namespace": ns, "resourceVersion": "1",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "endpoints": endpoints,
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}));
    }
    m
}

type Body = BoxBody<Bytes, Infallible>;

/// Pre-rendered list pages: path → pages of `limit` items.
struct Pages {
    by_path: HashMap<String, Vec<Bytes>>,
    lists: std::sync::atomic::AtomicUsize,
}

fn render(objects: HashMap<&'static str, Vec<Value>>, limit: usize) -> Pages {
    let mut by_path = HashMap::new();
    for (path, items) in objects {
        let chunks: Vec<&[Value]> = items.chunks(limit).collect();
        let n = chunks.len();
        let pages = chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let mut meta = json!({"resourceVersion": "100"});
                if i + 1 < n {
                    meta["continue"] = json!((i + 1).to_string());
                }
                Bytes::from(
                    json!({"kind": "List", "apiVersion": "v1", "metadata": meta, "items": c})
                        .to_string(),
                )
            })
            .collect();
        by_path.insert(path.to_string(), pages);
    }
    Pages {
        by_path,
        lists: Default::default(),
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    pages: Arc<Pages>,
) -> Result<hyper::Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .map(String::from)
    };
    let body: Body = if param("watch").as_deref() == Some("true") {
        StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, Infallible>,
        >())
        .boxed()
    } else {
        pages
            .lists
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let page: usize = param("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
        let bytes = pages
            .by_path
            .get(&path)
            .and_then(|p| p.get(page).cloned())
            .unwrap_or_else(|| {
                Bytes::from(
                    r#"{"kind":"List","apiVersion":"v1","metadata":{"resourceVersion":"100"},"items":[]}"#,
                )
            });
        Full::new(bytes).boxed()
    };
    Ok(hyper::Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .expect("static response"))
}

fn main() {
    let services = arg("--services", 10_000);
    let eps = arg("--endpoints-per-service", 10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let objects = generate(services, eps);
        let count: usize = objects.values().map(Vec::len).sum();
        let pages = Arc::new(render(objects, 500));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let p = pages.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let p = p.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(req, p.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let rss_before = status_mb("VmRSS:");
        let client =
            kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
                .unwrap();
        let started = Instant::now();
        let (mut store, _changes, mut watch) =
            strait::sources::kube::start(client, &strait::sources::kube::WatchOptions::default());
        tokio::time::timeout(Duration::from_secs(600), watch.wait_synced())
            .await
            .expect("synced within 10 minutes");
        let synced = started.elapsed();
        let reload = strait::sources::Source::reload(&mut store);
        let errors = reload.diagnostics.iter().filter(|d| d.is_error()).count();
        let resources = reload.resources.to_vec();
        let (snap, _) = strait_config::compile(&resources);
        let enrollment = strait_config::enroll::Enrollment::from_resources(&resources);
        let total = started.elapsed();
        let rss_after = status_mb("VmRSS:");
        let endpoints: usize = snap.clusters.values().map(|c| c.endpoints.len()).sum();
        println!(
            "{}",
            json!({
                "services": snap.services.len(),
                "endpoints": endpoints,
                "objects": count,
                "errors": errors,
                "meshed_namespaces": enrollment.namespaces.len(),
                "sync_ms": synced.as_secs_f64() * 1000.0,
                "compile_ms": (total - synced).as_secs_f64() * 1000.0,
                "total_ms": total.as_secs_f64() * 1000.0,
                "rss_before_mb": rss_before,
                "rss_after_mb": rss_after,
                "source_rss_mb": rss_after - rss_before,
                "peak_rss_mb": status_mb("VmHWM:"),
                "list_requests": pages.lists.load(std::sync::atomic::Ordering::Relaxed),
            })
        );
        drop(watch);
        drop(store);
    });
}
