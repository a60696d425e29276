//! kube-runtime's real watcher against a tiny fake API server on loopback
//! that serves list and watch JSON: the source resumes after a disconnect
//! from the last resource version it saw, relists after `410 Gone`, and
//! replaces what it serves with the relist (objects deleted while it was
//! away go).
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use std::sync::mpsc;

use super::store::ObjectStore;
use super::{watch_kind, Kind, WatchOptions};

fn ns(name: &str, rv: u32, labels: Value) -> Value {
    json!({"metadata": {"name": name, "resourceVersion": rv.to_string(), "labels": labels}})
}

fn list(rv: u32, items: Vec<Value>) -> String {
    json!({"kind": "NamespaceList", "apiVersion": "v1",
           "metadata": {"resourceVersion": rv.to_string()}, "items": items})
    .to_string()
}

fn event(kind: &str, mut obj: Value) -> String {
    if let Some(m) = obj.as_object_mut() {
        m.insert("kind".into(), json!("Namespace"));
        m.insert("apiVersion".into(), json!("v1"));
    }
    format!("{}\n", json!({"type": kind, "object": obj}))
}

type Body = BoxBody<Bytes, Infallible>;

fn full(s: String) -> Body {
    Full::new(Bytes::from(s)).boxed()
}

/// The scripted server: each request gets the next answer of its kind
/// (list or watch); the last watch stays open.
async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    log: Arc<Mutex<Vec<String>>>,
) -> Result<hyper::Response<Body>, Infallible> {
    let query = req.uri().query().unwrap_or_default().to_string();
    let watch = query.contains("watch=true");
    let rv = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("resourceVersion="))
        .unwrap_or("")
        .to_string();
    let n = {
        let mut l = log.lock().unwrap();
        l.push(if watch {
            format!("watch rv={rv}")
        } else {
            "list".into()
        });
        l.iter()
            .filter(|e| e.starts_with(if watch { "watch" } else { "list" }))
            .count()
    };
    let body = match (watch, n) {
        (false, 1) => full(list(10, vec![ns("a", 5, json!({})), ns("b", 6, json!({}))])),
        (true, 1) => full(
            [
                event(
                    "MODIFIED",
                    ns("a", 11, json!({"istio.io/dataplane-mode": "ambient"})),
                ),
                event("ADDED", ns("c", 12, json!({}))),
                event("DELETED", ns("b", 13, json!({}))),
            ]
            .concat(),
        ),
        // The stream ended (a disconnect): the watcher resumes from 13,
        // which the server no longer has.
        (true, 2) => full(event(
            "ERROR",
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "too old resource version: 13 (20)", "reason": "Expired", "code": 410}),
        )),
        (false, 2) => full(list(
            20,
            vec![
                ns("a", 11, json!({"istio.io/dataplane-mode": "ambient"})),
                ns("d", 19, json!({})),
            ],
        )),
        _ => StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, Infallible>,
        >())
        .boxed(),
    };
    Ok(hyper::Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .expect("static response"))
}

async fn serve(listener: tokio::net::TcpListener, log: Arc<Mutex<Vec<String>>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let log = log.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| answer(req, log.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn names(store: &Mutex<ObjectStore>) -> Vec<(String, bool)> {
    let mut st = store.lock().unwrap();
    let reload = st.snapshot();
    let e = strait_config::enroll::Enrollment::from_resources(&reload.resources.to_vec());
    reload
        .resources
        .iter()
        .map(|r| (r.name().to_string(), e.namespaces.contains(r.name())))
        .collect()
}

#[tokio::test]
async fn the_real_watcher_resumes_after_a_disconnect_and_relists_after_410_gone() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(serve(listener, log.clone()));

    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let (wake, _wakes) = mpsc::channel();
    let (store, mut synced) = ObjectStore::new(&["Namespace"], wake);
    let store = Arc::new(Mutex::new(store));
    let kind = Kind::new("", "v1", "Namespace", "namespaces");
    let watcher = tokio::spawn(watch_kind(
        client,
        kind,
        store.clone(),
        WatchOptions::default(),
    ));

    tokio::time::timeout(Duration::from_secs(20), synced.wait_for(|s| *s))
        .await
        .expect("synced after the first list")
        .unwrap();
    // Wait for the relist's result: {a (ambient), d}.
    let want = vec![("a".to_string(), true), ("d".to_string(), false)];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut got = names(&store);
    let requests = || log.lock().unwrap().len();
    while (got != want || requests() < 5) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = names(&store);
    }
    watcher.abort();
    server.abort();
    let log = log.lock().unwrap().clone();
    assert_eq!(got, want, "requests: {log:?}");
    assert_eq!(
        log[..5],
        ["list", "watch rv=10", "watch rv=13", "list", "watch rv=20"],
        "list, watch, resume from the last version, relist after 410, watch"
    );
}
