//! A stand-in for Istio's bookinfo sample: one binary plays each of its four
//! services, with bookinfo's call graph, so mesh routing is visible in the
//! responses.
//!
//! `bookinfo-app --service productpage|details|reviews|ratings
//!  --version v1|v2|v3 --listen ADDR [--details URL[,URL…]]
//!  [--reviews URL[,URL…]] [--ratings URL[,URL…]] [--timeout-ms MS]`
//!
//! - productpage (`/productpage`) calls details (`/details/0`) and reviews
//!   (`/reviews/0`); reviews v2 and v3 call ratings (`/ratings/0`), v1 does
//!   not. Every service answers `/` (health) too.
//! - Each answer is JSON naming the service, version and pod
//!   (`$POD_NAME`) that answered, with the nested answers of the services it
//!   called, e.g. `{"service":"productpage","version":"v1",
//!   "details":{…},"reviews":{"service":"reviews","version":"v2",
//!   "ratings":{…}}}`, and `headers`: the forwarded headers it received.
//! - An upstream failure is reported in place of its answer, as bookinfo's
//!   pages say "Ratings service is currently unavailable":
//!   `{"error":"ratings service unavailable","status":500}` (the upstream's
//!   HTTP status), or with `"reason"` instead of `status` when no response
//!   came (refused, timed out). The caller still answers 200, as bookinfo.
//! - Upstream requests carry `Host: <service>:<port>` (the URL's port) and
//!   forward `end-user`, `x-request-id`, `traceparent`, `tracestate`, `b3`,
//!   `x-b3-*`, `x-ot-span-context`, `user-agent`, `cookie` and
//!   `authorization`, as bookinfo's productpage and reviews do.
//! - Timeouts follow bookinfo: productpage gives details 3 s, and reviews
//!   3 s with one retry; reviews v2 gives ratings 10 s, v3 2.5 s.
//!   `--timeout-ms` overrides them all.
//! - Every upstream call uses a new connection (no keep-alive pool), as
//!   bookinfo's productpage does, so a connection-level load balancer
//!   spreads calls.
//! - Several comma-separated URLs are used round robin (for plain routing
//!   to pod IPs without the mesh).
//!
//! After binding it prints `listening on <addr>` on stdout (useful with
//! port 0); it serves HTTP/1.1 and HTTP/2 (prior knowledge) until killed.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Service {
    Productpage,
    Details,
    Reviews,
    Ratings,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Productpage => "productpage",
            Service::Details => "details",
            Service::Reviews => "reviews",
            Service::Ratings => "ratings",
        }
    }
}

#[derive(Parser, Debug)]
#[command(about = "bookinfo's services in one binary, for Strait's tests and demo")]
struct Args {
    /// Which bookinfo service to be.
    #[arg(long, value_enum)]
    service: Service,
    /// Its version label (reviews: v1 calls no ratings, v2/v3 do).
    #[arg(long, default_value = "v1")]
    version: String,
    /// Address to listen on, e.g. 0.0.0.0:9080 (port 0: any free port).
    #[arg(long)]
    listen: SocketAddr,
    /// details base URL(s), e.g. http://10.96.12.7:9080.
    #[arg(long, value_delimiter = ',')]
    details: Vec<String>,
    /// reviews base URL(s).
    #[arg(long, value_delimiter = ',')]
    reviews: Vec<String>,
    /// ratings base URL(s).
    #[arg(long, value_delimiter = ',')]
    ratings: Vec<String>,
    /// One timeout (ms) for every upstream call instead of bookinfo's.
    #[arg(long)]
    timeout_ms: Option<u64>,
}

/// Headers bookinfo propagates to the services it calls.
const FORWARDED: &[&str] = &[
    "end-user",
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
    "user-agent",
    "cookie",
    "authorization",
];

/// One upstream service: its base URLs (round robin) and how to call it.
struct Upstream {
    service: Service,
    urls: Vec<Uri>,
    next: AtomicUsize,
    timeout: Duration,
    attempts: u32,
}

struct App {
    service: Service,
    version: String,
    pod: Option<String>,
    details: Option<Upstream>,
    reviews: Option<Upstream>,
    ratings: Option<Upstream>,
    client: Client<HttpConnector, Full<Bytes>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let app = Arc::new(App::new(args.service, &args)?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen on {}: {e}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let app = app.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

impl App {
    fn new(service: Service, args: &Args) -> anyhow::Result<App> {
        let ms = |default: u64| Duration::from_millis(args.timeout_ms.unwrap_or(default));
        let upstream = |target: Service, urls: &[String], timeout, attempts| {
            if urls.is_empty() {
                return Ok(None);
            }
            let urls = urls
                .iter()
                .map(|u| {
                    u.parse::<Uri>()
                        .ok()
                        .filter(|u| u.scheme_str() == Some("http") && u.host().is_some())
                        .ok_or_else(|| {
                            anyhow::anyhow!("--{}: {u:?} is not an http:// URL", target.name())
                        })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok::<_, anyhow::Error>(Some(Upstream {
                service: target,
                urls,
                next: AtomicUsize::new(0),
                timeout,
                attempts,
            }))
        };
        let ratings_timeout = if args.version == "v3" { 2500 } else { 10_000 };
        Ok(App {
            service,
            version: args.version.clone(),
            pod: std::env::var("POD_NAME").ok(),
            details: upstream(Service::Details, &args.details, ms(3000), 1)?,
            reviews: upstream(Service::Reviews, &args.reviews, ms(3000), 2)?,
            ratings: upstream(Service::Ratings, &args.ratings, ms(ratings_timeout), 1)?,
            // A new connection per call, as bookinfo's productpage
            // (`requests.get`) makes them: L4 balancing then spreads calls,
            // not just connections.
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build_http(),
        })
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let forwarded = forwarded_headers(req.headers());
        let mut body = Map::new();
        body.insert("service".into(), json!(self.service.name()));
        body.insert("version".into(), json!(self.version));
        if let Some(pod) = &self.pod {
            body.insert("pod".into(), json!(pod));
        }
        if path == "/" || path == "/health" {
            body.insert("status".into(), json!("ok"));
            return respond(StatusCode::OK, body);
        }
        let id = match (
            self.service,
            path.strip_prefix('/').and_then(|p| p.split_once('/')),
        ) {
            (Service::Productpage, _) if path == "/productpage" => "0".to_string(),
            (s, Some((prefix, id))) if prefix == s.name() && !id.is_empty() => id.to_string(),
            _ => {
                body.insert("error".into(), json!(format!("no route for {path}")));
                return respond(StatusCode::NOT_FOUND, body);
            }
        };
        body.insert("id".into(), json!(id));
        let headers: Map<String, Value> = forwarded
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        body.insert("headers".into(), Value::Object(headers));
        match self.service {
            Service::Productpage => {
                let (details, reviews) = tokio::join!(
                    self.call(&self.details, Service::Details, &id, &forwarded),
                    self.call(&self.reviews, Service::Reviews, &id, &forwarded),
                );
                body.insert("details".into(), details);
                body.insert("reviews".into(), reviews);
            }
            Service::Details => {
                body.insert("author".into(), json!("William Shakespeare"));
                body.insert("year".into(), json!(1595));
            }
            Service::Reviews if self.version != "v1" => {
                let ratings = self
                    .call(&self.ratings, Service::Ratings, &id, &forwarded)
                    .await;
                body.insert("ratings".into(), ratings);
                let color = if self.version == "v2" { "black" } else { "red" };
                body.insert("stars".into(), json!(color));
            }
            Service::Reviews => {}
            Service::Ratings => {
                body.insert("ratings".into(), json!({"Reviewer1": 5, "Reviewer2": 4}));
            }
        }
        respond(StatusCode::OK, body)
    }

    /// Calls `target` for product `id`; its JSON answer, or an error object.
    async fn call(
        &self,
        upstream: &Option<Upstream>,
        target: Service,
        id: &str,
        forwarded: &HeaderMap,
    ) -> Value {
        let unavailable = format!("{} service unavailable", target.name());
        let Some(up) = upstream else {
            return json!({"error": unavailable, "reason": format!("no --{} URL given", target.name())});
        };
        let mut last = Value::Null;
        for _ in 0..up.attempts {
            let base = &up.urls[up.next.fetch_add(1, Ordering::Relaxed) % up.urls.len()];
            last = match tokio::time::timeout(up.timeout, self.get(up.service, base, id, forwarded))
                .await
            {
                Ok(Ok((status, body))) if status.is_success() => serde_json::from_slice(&body)
                    .unwrap_or_else(|e| {
                        json!({"error": unavailable, "status": status.as_u16(),
                               "reason": format!("invalid JSON: {e}")})
                    }),
                Ok(Ok((status, _))) => json!({"error": unavailable, "status": status.as_u16()}),
                Ok(Err(e)) => json!({"error": unavailable, "reason": format!("{e:#}")}),
                Err(_) => json!({"error": unavailable,
                                 "reason": format!("timeout after {} ms", up.timeout.as_millis())}),
            };
            if last.get("error").is_none() {
                break;
            }
        }
        last
    }

    async fn get(
        &self,
        target: Service,
        base: &Uri,
        id: &str,
        forwarded: &HeaderMap,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.get_inner(target, base, id, forwarded)
            .await
            .map_err(|e| {
                // hyper's errors say "client error (Connect)"; the cause is in
                // the source chain.
                let mut msg = e.to_string();
                let mut source = e.source();
                while let Some(s) = source {
                    msg = format!("{msg}: {s}");
                    source = s.source();
                }
                anyhow::anyhow!(msg)
            })
    }

    async fn get_inner(
        &self,
        target: Service,
        base: &Uri,
        id: &str,
        forwarded: &HeaderMap,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let port = base.port_u16().unwrap_or(80);
        let uri: Uri = format!(
            "http://{}{}/{}/{id}",
            base.authority().expect("checked at start"),
            base.path().trim_end_matches('/'),
            target.name()
        )
        .parse()?;
        let mut req = Request::get(uri).body(Full::new(Bytes::new()))?;
        req.headers_mut().extend(forwarded.clone());
        // The mesh routes by the service's host name, as Kubernetes DNS
        // would have given it to bookinfo.
        req.headers_mut().insert(
            header::HOST,
            HeaderValue::from_str(&format!("{}:{port}", target.name()))?,
        );
        let resp = self.client.request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FORWARDED {
        for v in headers.get_all(*name) {
            out.append(*name, v.clone());
        }
    }
    out
}

fn respond(status: StatusCode, body: Map<String, Value>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(Value::Object(body).to_string())))
        .expect("valid response")
}
