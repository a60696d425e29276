//! A fake API server on loopback for tests: every request is recorded
//! (method, path, query, JSON body) and answered by a handler; a watch the
//! handler does not answer stays open with no events, as a quiet API
//! server's does.
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::Value;

/// One request the fake server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// `GET`, `POST`, `PATCH`, ...
    pub method: String,
    /// `/api/v1/pods`.
    pub path: String,
    /// The query string.
    pub query: String,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

impl Recorded {
    /// Whether this is a watch request.
    pub fn is_watch(&self) -> bool {
        self.query.contains("watch=true")
    }
}

/// Answers a request: status and JSON body, or `None` (a watch that stays
/// open; 404 for anything else).
pub type Handler = Arc<dyn Fn(&Recorded) -> Option<(u16, Value)> + Send + Sync>;

/// The running fake (stopped on drop).
pub struct FakeApi {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Every request so far.
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

impl FakeApi {
    /// Starts serving on 127.0.0.1 (an ephemeral port).
    pub async fn start(handler: Handler) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (log, handler) = (log.clone(), handler.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        answer(req, log.clone(), handler.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    /// A client of this server (plain HTTP).
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// The requests so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    log: Arc<Mutex<Vec<Recorded>>>,
    handler: Handler,
) -> Result<hyper::Response<Body>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let rec = Recorded {
        method,
        path,
        query,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    };
    log.lock().unwrap().push(rec.clone());
    let (status, body): (u16, Body) = match handler(&rec) {
        Some((status, v)) => (status, Full::new(Bytes::from(v.to_string())).boxed()),
        None if rec.is_watch() => (
            200,
            StreamBody::new(futures_util::stream::pending::<
                Result<Frame<Bytes>, Infallible>,
            >())
            .boxed(),
        ),
        None => (
            404,
            Full::new(Bytes::from(
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "NotFound", "code": 404,
                    "message": format!("{} not found", rec.path)})
                .to_string(),
            ))
            .boxed(),
        ),
    };
    Ok(hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .expect("static response"))
}

/// A list answer of `kind` with `items`.
pub fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    serde_json::json!({"kind": format!("{kind}List"), "apiVersion": api_version,
        "metadata": {"resourceVersion": "1"}, "items": items})
}
