//! Istio's standard metrics with Istio's names, labels and buckets
//! (<https://istio.io/latest/docs/reference/config/metrics/>):
//! `istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes`, `istio_response_bytes`,
//! `istio_tcp_connections_opened_total`, `istio_tcp_connections_closed_total`,
//! `istio_tcp_sent_bytes_total`, `istio_tcp_received_bytes_total`.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of the HTTP/gRPC request metrics, as Istio's stats filter sets
/// them. Unknown values are `"unknown"`, as in Istio.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `source` for the client side (Strait's outbound proxy), `destination`
    /// for the server side.
    pub reporter: String,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub source_cluster: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    /// Fully qualified host, e.g. `reviews.default.svc.cluster.local`.
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    pub destination_cluster: String,
    /// `http`, `grpc` (or `tcp` on TCP metrics).
    pub request_protocol: String,
    /// HTTP status code, e.g. `200`.
    pub response_code: String,
    /// gRPC status code, `-` when not gRPC.
    pub grpc_response_status: String,
    /// Envoy response flags, `-` when none (e.g. `UO`, `NR`, `UH`).
    pub response_flags: String,
    /// `mutual_tls` or `none`.
    pub connection_security_policy: String,
}

/// Labels of the TCP metrics: Istio's set without the HTTP-only labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub reporter: String,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    pub request_protocol: String,
    pub response_flags: String,
    pub connection_security_policy: String,
}

impl From<&RequestLabels> for TcpLabels {
    /// The TCP metrics' subset of the request labels.
    fn from(r: &RequestLabels) -> Self {
        TcpLabels {
            reporter: r.reporter.clone(),
            source_workload: r.source_workload.clone(),
            source_workload_namespace: r.source_workload_namespace.clone(),
            source_principal: r.source_principal.clone(),
            source_app: r.source_app.clone(),
            source_version: r.source_version.clone(),
            destination_workload: r.destination_workload.clone(),
            destination_workload_namespace: r.destination_workload_namespace.clone(),
            destination_principal: r.destination_principal.clone(),
            destination_app: r.destination_app.clone(),
            destination_version: r.destination_version.clone(),
            destination_service: r.destination_service.clone(),
            destination_service_name: r.destination_service_name.clone(),
            destination_service_namespace: r.destination_service_namespace.clone(),
            request_protocol: r.request_protocol.clone(),
            response_flags: r.response_flags.clone(),
            connection_security_policy: r.connection_security_policy.clone(),
        }
    }
}

/// Istio's duration buckets, milliseconds.
const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// Istio's size buckets, bytes: 1, 10, 100, …, 10^8.
const BYTES_BUCKETS: [f64; 9] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The registry and every metric family. Cheap to share behind an `Arc`;
/// recording takes no lock beyond the family's label map.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration_ms: HistFamily<RequestLabels>,
    request_bytes: HistFamily<RequestLabels>,
    response_bytes: HistFamily<RequestLabels>,
    tcp_opened: Family<TcpLabels, Counter>,
    tcp_closed: Family<TcpLabels, Counter>,
    tcp_sent: Family<TcpLabels, Counter>,
    tcp_received: Family<TcpLabels, Counter>,
    /// `istio_agent_cert_expiry_seconds`: the node's workload certificates.
    pub cert_expiry: super::identity::CertExpiry,
    /// Istio's `citadel_server_*` metrics when the CA runs in this process.
    pub ca: Option<super::identity::CaMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family, and the CA's `citadel_server_*`
    /// metrics (for `strait ca serve` or a CA embedded in `strait run`).
    pub fn with_ca() -> Self {
        let mut m = Self::new();
        let ca = super::identity::CaMetrics::default();
        ca.register(&mut m.registry);
        m.ca = Some(ca);
        m
    }

    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        let duration_ms: HistFamily<RequestLabels> =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS_MS));
        let request_bytes: HistFamily<RequestLabels> =
            Family::new_with_constructor(|| Histogram::new(BYTES_BUCKETS));
        let response_bytes: HistFamily<RequestLabels> =
            Family::new_with_constructor(|| Histogram::new(BYTES_BUCKETS));
        let (tcp_opened, tcp_closed, tcp_sent, tcp_received) = Default::default();
        // prometheus-client appends `_total` to counters.
        registry.register("istio_requests", "Requests", requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration",
            duration_ms.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes",
            response_bytes.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            Family::<TcpLabels, Counter>::clone(&tcp_opened),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            Family::<TcpLabels, Counter>::clone(&tcp_closed),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the downstream during TCP connections",
            Family::<TcpLabels, Counter>::clone(&tcp_sent),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the downstream during TCP connections",
            Family::<TcpLabels, Counter>::clone(&tcp_received),
        );
        let cert_expiry = super::identity::CertExpiry::default();
        registry.register(
            "istio_agent_cert_expiry_seconds",
            "The time remaining, in seconds, before the certificate chain will expire.",
            cert_expiry.clone(),
        );
        Self {
            cert_expiry,
            ca: None,
            registry,
            requests,
            duration_ms,
            request_bytes,
            response_bytes,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
        }
    }

    /// Records one finished HTTP or gRPC request: duration in milliseconds,
    /// request and response body sizes in bytes.
    pub fn record_request(
        &self,
        labels: &RequestLabels,
        duration_ms: f64,
        req_bytes: u64,
        resp_bytes: u64,
    ) {
        self.requests.get_or_create(labels).inc();
        self.duration_ms.get_or_create(labels).observe(duration_ms);
        self.request_bytes
            .get_or_create(labels)
            .observe(req_bytes as f64);
        self.response_bytes
            .get_or_create(labels)
            .observe(resp_bytes as f64);
    }

    /// Records a TCP connection opened.
    pub fn tcp_opened(&self, labels: &TcpLabels) {
        self.tcp_opened.get_or_create(labels).inc();
    }

    /// Records a TCP connection closed with the bytes sent to and received
    /// from the downstream over its life.
    pub fn tcp_closed(&self, labels: &TcpLabels, sent_bytes: u64, received_bytes: u64) {
        self.tcp_closed.get_or_create(labels).inc();
        self.tcp_sent.get_or_create(labels).inc_by(sent_bytes);
        self.tcp_received
            .get_or_create(labels)
            .inc_by(received_bytes);
    }

    /// Adds counts of TCP connections seen elsewhere (the kernel's
    /// balanced connections): `opened` and `closed` connections, bytes
    /// sent to and received from the downstream.
    pub fn tcp_add(&self, labels: &TcpLabels, opened: u64, closed: u64, sent: u64, received: u64) {
        if opened > 0 {
            self.tcp_opened.get_or_create(labels).inc_by(opened);
        }
        if closed > 0 {
            self.tcp_closed.get_or_create(labels).inc_by(closed);
        }
        if closed > 0 || sent > 0 {
            self.tcp_sent.get_or_create(labels).inc_by(sent);
        }
        if closed > 0 || received > 0 {
            self.tcp_received.get_or_create(labels).inc_by(received);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(code: &str, flags: &str) -> RequestLabels {
        let u = || "unknown".to_string();
        RequestLabels {
            reporter: "source".into(),
            source_workload: "productpage-v1".into(),
            source_workload_namespace: "default".into(),
            source_principal: u(),
            source_app: "productpage".into(),
            source_version: "v1".into(),
            source_cluster: u(),
            destination_workload: "reviews-v2".into(),
            destination_workload_namespace: "default".into(),
            destination_principal: u(),
            destination_app: "reviews".into(),
            destination_version: "v2".into(),
            destination_service: "reviews.default.svc.cluster.local".into(),
            destination_service_name: "reviews".into(),
            destination_service_namespace: "default".into(),
            destination_cluster: u(),
            request_protocol: "http".into(),
            response_code: code.into(),
            grpc_response_status: "-".into(),
            response_flags: flags.into(),
            connection_security_policy: "none".into(),
        }
    }

    #[test]
    fn requests_are_counted_per_label_set_with_istio_names() {
        let m = Metrics::new();
        m.record_request(&labels("200", "-"), 3.0, 0, 120);
        m.record_request(&labels("200", "-"), 7.0, 0, 120);
        m.record_request(&labels("503", "UO"), 0.2, 0, 81);
        let text = m.encode();
        let line = |code: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("istio_requests_total{")
                        && l.contains(&format!("response_code=\"{code}\""))
                })
                .unwrap_or_else(|| panic!("no istio_requests_total for {code} in\n{text}"))
                .to_string()
        };
        assert!(line("200").ends_with(" 2"), "{}", line("200"));
        assert!(line("503").contains("response_flags=\"UO\"") && line("503").ends_with(" 1"));
        assert!(text.contains("istio_request_duration_milliseconds_bucket{"));
        assert!(text.contains("le=\"5.0\""), "Istio's 5 ms bucket missing");
        assert!(text.contains("istio_response_bytes_sum{"));
    }

    #[test]
    fn tcp_connections_and_bytes_are_counted() {
        let m = Metrics::new();
        let l = TcpLabels {
            reporter: "source".into(),
            source_workload: "a".into(),
            source_workload_namespace: "default".into(),
            source_principal: "unknown".into(),
            source_app: "a".into(),
            source_version: "v1".into(),
            destination_workload: "b".into(),
            destination_workload_namespace: "default".into(),
            destination_principal: "unknown".into(),
            destination_app: "b".into(),
            destination_version: "v1".into(),
            destination_service: "b.default.svc.cluster.local".into(),
            destination_service_name: "b".into(),
            destination_service_namespace: "default".into(),
            request_protocol: "tcp".into(),
            response_flags: "-".into(),
            connection_security_policy: "none".into(),
        };
        m.tcp_opened(&l);
        m.tcp_closed(&l, 100, 42);
        let text = m.encode();
        for (name, v) in [
            ("istio_tcp_connections_opened_total{", " 1"),
            ("istio_tcp_connections_closed_total{", " 1"),
            ("istio_tcp_sent_bytes_total{", " 100"),
            ("istio_tcp_received_bytes_total{", " 42"),
        ] {
            let line = text
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("{name} missing"));
            assert!(line.ends_with(v), "{line}");
        }
    }
}
