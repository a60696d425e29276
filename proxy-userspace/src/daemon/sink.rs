//! The daemon's access-log sink: one Envoy-format line per request where
//! the MeshConfig says (`accessLogFile`, default `/dev/stdout`; `""` turns it
//! off), encoded as it says (`accessLogEncoding` TEXT/JSON,
//! `accessLogFormat`), and Istio's standard metrics, labelled from the live
//! snapshot's workloads. The settings are read from the live snapshot, so a
//! changed mesh config applies to the next request.
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use strait_config::mesh::{AccessLogEncoding, MeshConfig};
use strait_config::snapshot::{MeshSnapshot, Workload};
use tokio::sync::mpsc;

use crate::telemetry::access_log::{AccessLogRecord, AccessLogSink, LogFormat};

/// The parsed `accessLogFormat` for one (encoding, format) pair.
struct Renderer {
    json: bool,
    format: String,
    log: LogFormat,
}

impl Renderer {
    fn for_mesh(mesh: &MeshConfig) -> Renderer {
        let json = mesh.access_log_encoding == AccessLogEncoding::Json;
        let format = mesh.access_log_format.clone();
        let log = LogFormat::new(json, &format).unwrap_or_else(|e| {
            tracing::error!(
                "MeshConfig accessLogFormat {format:?}: {e}; using Istio's default format"
            );
            LogFormat::new(json, "").expect("the default format parses")
        });
        Renderer { json, format, log }
    }

    fn is_for(&self, mesh: &MeshConfig) -> bool {
        self.json == (mesh.access_log_encoding == AccessLogEncoding::Json)
            && self.format == mesh.access_log_format
    }
}

/// Where lines go: `/dev/stdout`, `/dev/stderr`, or a file (appended to).
struct Output {
    path: Arc<str>,
    out: Option<Box<dyn Write + Send>>,
}

impl Output {
    fn open(path: Arc<str>) -> Output {
        let out: Option<Box<dyn Write + Send>> = match &*path {
            "/dev/stdout" => Some(Box::new(std::io::stdout())),
            "/dev/stderr" => Some(Box::new(std::io::stderr())),
            p => match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                Ok(f) => Some(Box::new(std::io::BufWriter::new(f))),
                Err(e) => {
                    tracing::error!("MeshConfig accessLogFile {p}: {e}; access log lines dropped");
                    None
                }
            },
        };
        Output { path, out }
    }
}
use crate::telemetry::{Metrics, RequestLabels, TcpLabels};

/// Records metrics on the request's task and hands the line to a writer
/// task, so a slow terminal never stalls a request.
pub struct TelemetrySink {
    snapshot: Arc<ArcSwap<MeshSnapshot>>,
    metrics: Arc<Metrics>,
    lines: Option<mpsc::UnboundedSender<(Arc<str>, String)>>,
    renderer: ArcSwap<Renderer>,
}

impl TelemetrySink {
    /// A sink over the live snapshot; with `access_log` (no
    /// `--no-access-log`) lines go where the snapshot's MeshConfig says (the
    /// writer task is spawned on the current runtime).
    pub fn new(
        snapshot: Arc<ArcSwap<MeshSnapshot>>,
        metrics: Arc<Metrics>,
        access_log: bool,
    ) -> Self {
        let lines = access_log.then(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<(Arc<str>, String)>();
            tokio::spawn(async move {
                let mut current: Option<Output> = None;
                while let Some(first) = rx.recv().await {
                    let mut next = Some(first);
                    // Write whatever else is queued before flushing once.
                    while let Some((path, line)) = next.take() {
                        if current.as_ref().is_none_or(|c| c.path != path) {
                            if let Some(out) = current.as_mut().and_then(|c| c.out.as_mut()) {
                                let _ = out.flush();
                            }
                            current = Some(Output::open(path));
                        }
                        if let Some(out) = current.as_mut().and_then(|c| c.out.as_mut()) {
                            let _ = writeln!(out, "{line}");
                        }
                        next = rx.try_recv().ok();
                    }
                    if let Some(out) = current.as_mut().and_then(|c| c.out.as_mut()) {
                        let _ = out.flush();
                    }
                }
            });
            tx
        });
        let renderer = ArcSwap::from_pointee(Renderer::for_mesh(&snapshot.load().mesh));
        Self {
            snapshot,
            metrics,
            lines,
            renderer,
        }
    }
}

/// Istio's workload name: the owning Deployment's name for a Deployment's
/// pod (`reviews-v2-5b64f47978-xk2lp` → `reviews-v2`, recognised by the
/// `pod-template-hash` label), else the pod's name.
pub(super) fn workload_name(w: &Workload) -> String {
    match w.labels.get("pod-template-hash") {
        Some(hash) => w
            .name
            .split_once(&format!("-{hash}"))
            .map_or_else(|| w.name.clone(), |(d, _)| d.to_string()),
        None => w.name.clone(),
    }
}

/// One side's workload labels (`unknown` when the address is no workload).
pub(super) struct Side {
    pub(super) workload: String,
    pub(super) namespace: String,
    pub(super) app: String,
    pub(super) version: String,
}

/// Istio's `source_principal` / `destination_principal`: the SPIFFE ID,
/// or `unknown`.
fn principal(p: &Option<Arc<str>>) -> String {
    p.as_deref().unwrap_or("unknown").to_string()
}

/// The labels of the workload at `ip`.
pub(super) fn side(snap: &MeshSnapshot, ip: Option<IpAddr>) -> Side {
    let unknown = || "unknown".to_string();
    match ip.and_then(|ip| snap.workload(ip)) {
        Some(w) => Side {
            workload: workload_name(w),
            namespace: w.namespace.clone(),
            app: w.labels.get("app").cloned().unwrap_or_else(unknown),
            version: w.labels.get("version").cloned().unwrap_or_else(unknown),
        },
        None => Side {
            workload: unknown(),
            namespace: unknown(),
            app: unknown(),
            version: unknown(),
        },
    }
}

/// Istio's labels of record `r`, from the snapshot's workloads and
/// services.
fn labels(snap: &MeshSnapshot, r: &AccessLogRecord) -> RequestLabels {
    let src = side(snap, r.downstream_remote_address.map(|a| a.ip()));
    let dst = side(snap, r.upstream_host.map(|a| a.ip()));
    let service = r
        .destination_service
        .as_deref()
        .unwrap_or("unknown")
        .to_string();
    let (svc_name, svc_ns) = match snap.services.get(&service) {
        Some(s) => (s.name.clone(), s.namespace.clone()),
        None => ("unknown".into(), "unknown".into()),
    };
    // Istio's inbound clusters (`inbound|<port>||`) are the
    // destination side's (serve/inbound.rs).
    let inbound = r
        .upstream_cluster
        .as_deref()
        .is_some_and(|c| c.starts_with("inbound|"));
    RequestLabels {
        reporter: if inbound {
            "destination"
        } else {
            r.peer.reporter.as_str()
        }
        .into(),
        source_workload: src.workload,
        source_workload_namespace: src.namespace,
        source_principal: principal(&r.peer.source_principal),
        source_app: src.app,
        source_version: src.version,
        source_cluster: "unknown".into(),
        destination_workload: dst.workload,
        destination_workload_namespace: dst.namespace,
        destination_principal: principal(&r.peer.destination_principal),
        destination_app: dst.app,
        destination_version: dst.version,
        destination_service: service,
        destination_service_name: svc_name,
        destination_service_namespace: svc_ns,
        destination_cluster: "unknown".into(),
        request_protocol: r.request_protocol.into(),
        response_code: r.response_code.to_string(),
        grpc_response_status: r.grpc_status.map_or_else(|| "-".into(), |s| s.to_string()),
        response_flags: r.response_flags.to_string(),
        connection_security_policy: r.peer.security.as_str().into(),
    }
}

impl AccessLogSink for TelemetrySink {
    fn opened(&self, r: &AccessLogRecord) {
        if r.request_protocol == "tcp" {
            let labels = labels(&self.snapshot.load(), r);
            self.metrics.tcp_opened(&TcpLabels::from(&labels));
        }
    }

    fn log(&self, r: AccessLogRecord) {
        let snap = self.snapshot.load();
        let labels = labels(&snap, &r);
        if r.request_protocol == "tcp" {
            let tcp = TcpLabels::from(&labels);
            // Records arrive when the connection closes: the opened
            // counter moves then too unless it was counted at the open.
            if !r.opened_counted {
                self.metrics.tcp_opened(&tcp);
            }
            self.metrics
                .tcp_closed(&tcp, r.bytes_sent, r.bytes_received);
        } else {
            self.metrics.record_request(
                &labels,
                r.duration_ms as f64,
                r.bytes_received,
                r.bytes_sent,
            );
        }
        if let Some(tx) = &self.lines {
            let mesh = &snap.mesh;
            if !mesh.access_log_file.is_empty() {
                let mut renderer = self.renderer.load_full();
                if !renderer.is_for(mesh) {
                    renderer = Arc::new(Renderer::for_mesh(mesh));
                    self.renderer.store(renderer.clone());
                }
                let line = renderer.log.render(&r);
                let _ = tx.send((mesh.access_log_file.as_str().into(), line));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// accessLogFile / accessLogEncoding / accessLogFormat from the live
    /// snapshot: lines go to the file, in the encoding and format given, and
    /// follow a changed mesh config.
    #[tokio::test]
    async fn access_log_follows_the_mesh_config() {
        let dir = std::env::temp_dir().join(format!("strait-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (json_file, text_file) = (dir.join("json.log"), dir.join("text.log"));
        let mut snap = MeshSnapshot::default();
        snap.mesh.access_log_file = json_file.display().to_string();
        snap.mesh.access_log_encoding = AccessLogEncoding::Json;
        let live = Arc::new(ArcSwap::from_pointee(snap.clone()));
        let sink = TelemetrySink::new(live.clone(), Arc::new(Metrics::new()), true);
        let rec = |path: &str| AccessLogRecord {
            method: Some(http::Method::GET),
            path: Some(path.into()),
            response_code: 200,
            request_protocol: "http",
            ..Default::default()
        };
        sink.log(rec("/a"));
        snap.mesh.access_log_file = text_file.display().to_string();
        snap.mesh.access_log_encoding = AccessLogEncoding::Text;
        snap.mesh.access_log_format = "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%\n".into();
        live.store(Arc::new(snap.clone()));
        sink.log(rec("/b"));
        snap.mesh.access_log_file = String::new();
        live.store(Arc::new(snap));
        sink.log(rec("/c"));
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while (read(&json_file).is_empty() || read(&text_file).is_empty())
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let json = read(&json_file);
        let v: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON object");
        assert_eq!(
            (v["method"].as_str(), v["path"].as_str()),
            (Some("GET"), Some("/a"))
        );
        assert_eq!(v["response_code"], 200);
        assert_eq!(read(&text_file), "GET /b 200\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Istio's security labels come from the record's `PeerInfo`:
    /// `none` for the plain-text paths, `mutual_tls` with both SPIFFE IDs
    /// (and the reporter) for an mTLS connection, `unknown` otherwise.
    #[tokio::test]
    async fn security_labels_follow_the_connection() {
        use crate::telemetry::{PeerInfo, Reporter};
        let live = Arc::new(ArcSwap::from_pointee(MeshSnapshot::default()));
        let metrics = Arc::new(Metrics::new());
        let sink = TelemetrySink::new(live, metrics.clone(), false);
        let rec = |peer: PeerInfo, proto: &'static str| AccessLogRecord {
            response_code: if proto == "tcp" { 0 } else { 200 },
            request_protocol: proto,
            peer,
            ..Default::default()
        };
        sink.log(rec(PeerInfo::plaintext(), "http"));
        sink.log(rec(PeerInfo::plaintext(), "tcp"));
        sink.log(rec(
            PeerInfo::mutual_tls(
                Reporter::Destination,
                Some("spiffe://cluster.local/ns/a/sa/client".into()),
                Some("spiffe://cluster.local/ns/b/sa/server".into()),
            ),
            "http",
        ));
        sink.log(rec(PeerInfo::default(), "http"));
        let text = metrics.encode();
        let requests: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .collect();
        assert_eq!(requests.len(), 3, "{text}");
        let plain = requests
            .iter()
            .find(|l| l.contains("connection_security_policy=\"none\""))
            .expect("a plain-text series");
        assert!(plain.contains("reporter=\"source\""), "{plain}");
        assert!(plain.contains("source_principal=\"unknown\""), "{plain}");
        let mtls = requests
            .iter()
            .find(|l| l.contains("connection_security_policy=\"mutual_tls\""))
            .expect("an mTLS series");
        assert!(mtls.contains("reporter=\"destination\""), "{mtls}");
        assert!(
            mtls.contains("source_principal=\"spiffe://cluster.local/ns/a/sa/client\""),
            "{mtls}"
        );
        assert!(
            mtls.contains("destination_principal=\"spiffe://cluster.local/ns/b/sa/server\""),
            "{mtls}"
        );
        assert!(requests
            .iter()
            .any(|l| l.contains("connection_security_policy=\"unknown\"")));
        assert!(text
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_opened_total{")
                && l.contains("connection_security_policy=\"none\"")));
    }

    /// A TCP connection counted as opened when it opens is not counted
    /// again when its record arrives; one recorded only at its close is.
    #[tokio::test]
    async fn tcp_connections_are_counted_opened_once() {
        let live = Arc::new(ArcSwap::from_pointee(MeshSnapshot::default()));
        let metrics = Arc::new(Metrics::new());
        let sink = TelemetrySink::new(live, metrics.clone(), false);
        let rec = AccessLogRecord {
            request_protocol: "tcp",
            ..Default::default()
        };
        let value = |family: &str| -> Option<String> {
            metrics
                .encode()
                .lines()
                .find(|l| l.starts_with(&format!("{family}{{")))
                .and_then(|l| l.rsplit(' ').next().map(String::from))
        };
        sink.opened(&rec);
        assert_eq!(
            value("istio_tcp_connections_opened_total").as_deref(),
            Some("1")
        );
        assert_eq!(value("istio_tcp_connections_closed_total"), None);
        sink.log(AccessLogRecord {
            opened_counted: true,
            ..rec.clone()
        });
        assert_eq!(
            value("istio_tcp_connections_opened_total").as_deref(),
            Some("1")
        );
        assert_eq!(
            value("istio_tcp_connections_closed_total").as_deref(),
            Some("1")
        );
        sink.log(rec);
        assert_eq!(
            value("istio_tcp_connections_opened_total").as_deref(),
            Some("2")
        );
    }

    #[test]
    fn deployment_pods_report_the_deployment_name() {
        let w = Workload {
            name: "reviews-v2-5b64f47978-xk2lp".into(),
            namespace: "default".into(),
            ip: "10.244.0.7".parse().unwrap(),
            labels: std::sync::Arc::new(
                [("pod-template-hash".to_string(), "5b64f47978".to_string())].into(),
            ),
            service_account: "default".into(),
            locality: String::new(),
            node: None,
            services: vec![],
        };
        assert_eq!(workload_name(&w), "reviews-v2");
        let bare = Workload {
            labels: Default::default(),
            ..w
        };
        assert_eq!(workload_name(&bare), "reviews-v2-5b64f47978-xk2lp");
    }
}
