//! The daemon's access-log sink: one Envoy-format line per request on
//! standard output (Istio's `accessLogFile: /dev/stdout`) and Istio's
//! standard metrics, labelled from the live snapshot's workloads.
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use strait_config::snapshot::{MeshSnapshot, Workload};
use tokio::sync::mpsc;

use crate::proxy::{AccessLogRecord, AccessLogSink};
use crate::telemetry::{Metrics, RequestLabels, TcpLabels};

/// Records metrics on the request's task and hands the line to a writer
/// task, so a slow terminal never stalls a request.
pub struct TelemetrySink {
    snapshot: Arc<ArcSwap<MeshSnapshot>>,
    metrics: Arc<Metrics>,
    lines: Option<mpsc::UnboundedSender<String>>,
}

impl TelemetrySink {
    /// A sink over the live snapshot; with `access_log` the lines go to
    /// standard output (the writer task is spawned on the current runtime).
    pub fn new(
        snapshot: Arc<ArcSwap<MeshSnapshot>>,
        metrics: Arc<Metrics>,
        access_log: bool,
    ) -> Self {
        let lines = access_log.then(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            tokio::spawn(async move {
                while let Some(line) = rx.recv().await {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    // Write whatever else is queued before flushing once.
                    while let Ok(line) = rx.try_recv() {
                        let _ = writeln!(out, "{line}");
                    }
                    let _ = out.flush();
                }
            });
            tx
        });
        Self {
            snapshot,
            metrics,
            lines,
        }
    }
}

/// Istio's workload name: the owning Deployment's name for a Deployment's
/// pod (`reviews-v2-5b64f47978-xk2lp` → `reviews-v2`, recognised by the
/// `pod-template-hash` label), else the pod's name.
fn workload_name(w: &Workload) -> String {
    match w.labels.get("pod-template-hash") {
        Some(hash) => w
            .name
            .split_once(&format!("-{hash}"))
            .map_or_else(|| w.name.clone(), |(d, _)| d.to_string()),
        None => w.name.clone(),
    }
}

struct Side {
    workload: String,
    namespace: String,
    app: String,
    version: String,
}

fn side(snap: &MeshSnapshot, ip: Option<IpAddr>) -> Side {
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

impl AccessLogSink for TelemetrySink {
    fn log(&self, r: AccessLogRecord) {
        let snap = self.snapshot.load();
        let src = side(&snap, r.downstream_remote_address.map(|a| a.ip()));
        let dst = side(&snap, r.upstream_host.map(|a| a.ip()));
        let service = r
            .destination_service
            .as_deref()
            .unwrap_or("unknown")
            .to_string();
        let (svc_name, svc_ns) = match snap.services.get(&service) {
            Some(s) => (s.name.clone(), s.namespace.clone()),
            None => ("unknown".into(), "unknown".into()),
        };
        let labels = RequestLabels {
            reporter: "source".into(),
            source_workload: src.workload,
            source_workload_namespace: src.namespace,
            source_principal: "unknown".into(),
            source_app: src.app,
            source_version: src.version,
            source_cluster: "unknown".into(),
            destination_workload: dst.workload,
            destination_workload_namespace: dst.namespace,
            destination_principal: "unknown".into(),
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
            connection_security_policy: "unknown".into(),
        };
        if r.request_protocol == "tcp" {
            let tcp = TcpLabels::from(&labels);
            // Records arrive when the connection closes, so both counters
            // move then.
            self.metrics.tcp_opened(&tcp);
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
            let _ = tx.send(r.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
