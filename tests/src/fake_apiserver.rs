//! A fake Kubernetes API server for tests without a cluster: it serves
//! list (`GET /api/v1/pods`, `GET /apis/<group>/<version>/<plural>`) and
//! watch (`?watch=true`, newline-delimited JSON events) for the objects a
//! test puts in, over plain HTTP on a listener the test provides (on
//! loopback, or in a simulated node's namespace). Every change bumps the
//! resource version and is sent to open watches. Kinds with no objects
//! list empty. TokenReviews (`POST /apis/authentication.k8s.io/v1/tokenreviews`)
//! are answered from the statuses a test sets ([`FakeApiServer::set_token_review`]);
//! an unknown token is not authenticated. Nothing else of the API is
//! implemented.
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

#[derive(Default)]
struct State {
    rv: u64,
    /// resource path (`api/v1/pods`) → `namespace/name` → object.
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    /// Every event: (resource version, path, JSON line), for watches that
    /// start from an older version.
    history: Vec<(u64, String, String)>,
    /// token → TokenReview `status`.
    token_reviews: BTreeMap<String, Value>,
}

/// The server's objects; clone it to change them from the test.
#[derive(Clone)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<(String, String)>,
}

/// The resource path of an object: `api/v1/<plural>` for the core group,
/// `apis/<group>/<version>/<plural>` otherwise (plural: lower-case kind +
/// `s`, `ies` for a kind ending in `y`, `es` for one ending in `s`).
pub fn path_of(obj: &Value) -> String {
    let api = obj["apiVersion"].as_str().unwrap_or("v1");
    let kind = obj["kind"].as_str().unwrap_or_default().to_lowercase();
    let plural = if let Some(stem) = kind.strip_suffix('y') {
        format!("{stem}ies")
    } else if kind.ends_with('s') {
        format!("{kind}es")
    } else {
        format!("{kind}s")
    };
    if api.contains('/') {
        format!("apis/{api}/{plural}")
    } else {
        format!("api/{api}/{plural}")
    }
}

fn key_of(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["metadata"]["namespace"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    )
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeApiServer {
    /// An empty server.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                rv: 1,
                ..State::default()
            })),
            events: broadcast::channel(1024).0,
        }
    }

    /// Adds or replaces `obj` (with `apiVersion`, `kind`, `metadata`),
    /// sending ADDED or MODIFIED to open watches.
    pub fn apply(&self, mut obj: Value) {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        let path = path_of(&obj);
        let old = st
            .objects
            .entry(path.clone())
            .or_default()
            .insert(key_of(&obj), obj.clone());
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        let line = json!({"type": kind, "object": obj}).to_string();
        let rv = st.rv;
        st.history.push((rv, path.clone(), line.clone()));
        let _ = self.events.send((path, line));
    }

    /// What a TokenReview of `token` answers: its `status`
    /// (`{"authenticated": true, "user": {...}}`).
    pub fn set_token_review(&self, token: &str, status: Value) {
        self.state
            .lock()
            .unwrap()
            .token_reviews
            .insert(token.to_string(), status);
    }

    async fn review(&self, req: hyper::Request<hyper::body::Incoming>) -> Value {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let token = asked["spec"]["token"].as_str().unwrap_or_default();
        let status = self
            .state
            .lock()
            .unwrap()
            .token_reviews
            .get(token)
            .cloned()
            .unwrap_or_else(|| json!({"authenticated": false, "error": "token not known"}));
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
               "spec": asked["spec"], "status": status})
    }

    /// Removes `obj` (matched by path and namespace/name), sending DELETED.
    pub fn delete(&self, obj: &Value) {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let path = path_of(obj);
        let rv = st.rv;
        if let Some(mut old) = st
            .objects
            .get_mut(&path)
            .and_then(|m| m.remove(&key_of(obj)))
        {
            old["metadata"]["resourceVersion"] = json!(rv.to_string());
            let line = json!({"type": "DELETED", "object": old}).to_string();
            st.history.push((rv, path.clone(), line.clone()));
            let _ = self.events.send((path, line));
        }
    }

    /// Serves on `listener` until the runtime ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let me = me.clone();
                    async move {
                        if req.method() == hyper::Method::POST
                            && req.uri().path().ends_with("/tokenreviews")
                        {
                            let v = me.review(req).await;
                            let resp = hyper::Response::builder()
                                .status(201)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(v.to_string())).boxed())
                                .expect("static response");
                            return Ok::<_, Infallible>(resp);
                        }
                        Ok::<_, Infallible>(me.answer(req))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    fn answer(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<BoxBody<Bytes, Infallible>> {
        let path = req.uri().path().trim_start_matches('/').to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let watch = query.contains("watch=true");
        let body = if watch {
            let from: u64 = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("resourceVersion="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (tx, body_rx) = mpsc::unbounded_channel();
            // Under the lock: the events after `from` so far, then the
            // live ones, with nothing missed in between.
            let mut rx = {
                let st = self.state.lock().unwrap();
                for (_, _, line) in st
                    .history
                    .iter()
                    .filter(|(rv, p, _)| *rv > from && *p == path)
                {
                    let _ = tx.send(format!("{line}\n"));
                }
                self.events.subscribe()
            };
            tokio::spawn(async move {
                while let Ok((p, line)) = rx.recv().await {
                    if p == path && tx.send(format!("{line}\n")).is_err() {
                        return;
                    }
                }
            });
            ChanBody(body_rx).boxed()
        } else {
            let st = self.state.lock().unwrap();
            let items: Vec<Value> = st
                .objects
                .get(&path)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            Full::new(Bytes::from(
                json!({"apiVersion": "v1", "kind": "List",
                       "metadata": {"resourceVersion": st.rv.to_string()}, "items": items})
                .to_string(),
            ))
            .boxed()
        };
        hyper::Response::builder()
            .header("content-type", "application/json")
            .body(body)
            .expect("static response")
    }
}

/// A streamed response body fed by a channel (a watch).
struct ChanBody(mpsc::UnboundedReceiver<String>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|l| l.map(|l| Ok(Frame::data(Bytes::from(l)))))
    }
}
