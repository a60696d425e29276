//! Identity metrics with Istio's names.
//!
//! CA side (istiod's `security/pkg/server/ca/monitoring.go`):
//! `citadel_server_csr_count`, `citadel_server_success_cert_issuance_count`,
//! `citadel_server_authentication_failure_count`,
//! `citadel_server_csr_parsing_err_count`,
//! `citadel_server_id_extraction_err_count`,
//! `citadel_server_csr_sign_err_count{error}`,
//! `citadel_server_root_cert_expiry_timestamp`,
//! `citadel_server_cert_chain_expiry_timestamp`. Counters keep Istio's names
//! exactly (no `_total` suffix).
//!
//! Node side (the Istio agent's): `istio_agent_cert_expiry_seconds{resource_name}`,
//! seconds until each workload certificate expires, computed at scrape time.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// A counter exposed under its exact name (Istio's `citadel_*` counters
/// carry no `_total` suffix).
#[derive(Clone, Debug, Default)]
pub struct IstioCounter(Counter);

impl IstioCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

impl EncodeMetric for IstioCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.0.get())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

impl prometheus_client::metrics::TypedMetric for IstioCounter {
    const TYPE: MetricType = MetricType::Counter;
}

/// `error` label of `citadel_server_csr_sign_err_count` (Istio's
/// `caerror` types: `CSR_PARSE_ERROR`, `TTL_ERROR`, `CERT_GEN_ERROR`, `CA_NOT_READY`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignErrorLabels {
    /// The error type.
    pub error: String,
}

/// The CA's counters and gauges.
#[derive(Clone, Debug, Default)]
pub struct CaMetrics {
    /// CSRs received (`citadel_server_csr_count`).
    pub csr: IstioCounter,
    /// Certificates issued (`citadel_server_success_cert_issuance_count`).
    pub success: IstioCounter,
    /// Bad or missing token, or an identity the node may not have
    /// (`citadel_server_authentication_failure_count`).
    pub authn_failure: IstioCounter,
    /// CSRs that do not parse or verify (`citadel_server_csr_parsing_err_count`).
    pub csr_parsing_err: IstioCounter,
    /// Missing or malformed `ImpersonatedIdentity` (`citadel_server_id_extraction_err_count`).
    pub id_extraction_err: IstioCounter,
    /// Signing failures by type (`citadel_server_csr_sign_err_count{error}`).
    pub sign_err: Family<SignErrorLabels, Gauge>,
    /// Root expiry, Unix seconds (`citadel_server_root_cert_expiry_timestamp`).
    pub root_expiry: Gauge,
    /// Signing certificate expiry, Unix seconds (`citadel_server_cert_chain_expiry_timestamp`).
    pub chain_expiry: Gauge,
}

impl CaMetrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let c = |r: &mut Registry, name: &str, help: &str, m: &IstioCounter| {
            r.register(name, help, m.clone());
        };
        c(
            registry,
            "citadel_server_csr_count",
            "The number of CSRs received by Citadel server.",
            &self.csr,
        );
        c(
            registry,
            "citadel_server_success_cert_issuance_count",
            "The number of certificates issuances that have succeeded.",
            &self.success,
        );
        c(
            registry,
            "citadel_server_authentication_failure_count",
            "The number of authentication failures.",
            &self.authn_failure,
        );
        c(
            registry,
            "citadel_server_csr_parsing_err_count",
            "The number of errors occurred when parsing the CSR.",
            &self.csr_parsing_err,
        );
        c(
            registry,
            "citadel_server_id_extraction_err_count",
            "The number of errors occurred when extracting the ID from CSR.",
            &self.id_extraction_err,
        );
        registry.register(
            "citadel_server_csr_sign_err_count",
            "The number of errors occurred when signing the CSR.",
            self.sign_err.clone(),
        );
        registry.register(
            "citadel_server_root_cert_expiry_timestamp",
            "The unix timestamp, in seconds, when Citadel root cert will expire.",
            self.root_expiry.clone(),
        );
        registry.register(
            "citadel_server_cert_chain_expiry_timestamp",
            "The unix timestamp, in seconds, when Citadel cert chain will expire.",
            self.chain_expiry.clone(),
        );
    }

    /// Counts a signing failure of `kind`.
    pub fn sign_error(&self, kind: &str) {
        self.sign_err
            .get_or_create(&SignErrorLabels { error: kind.into() })
            .inc();
    }
}

/// `istio_agent_cert_expiry_seconds{resource_name}`: seconds until each of
/// the node's workload certificates expires (negative once expired),
/// computed when scraped. `resource_name` is the SPIFFE ID.
#[derive(Clone, Debug, Default)]
pub struct CertExpiry(Arc<Mutex<BTreeMap<String, SystemTime>>>);

impl CertExpiry {
    /// Sets (or replaces) the expiry of `resource`.
    pub fn set(&self, resource: &str, not_after: SystemTime) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(resource.into(), not_after);
    }

    /// Forgets `resource` (its certificate was dropped).
    pub fn remove(&self, resource: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(resource);
    }
}

impl EncodeMetric for CertExpiry {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let now = SystemTime::now();
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (name, t) in map {
            let secs = match t.duration_since(now) {
                Ok(d) => d.as_secs_f64(),
                Err(e) => -e.duration().as_secs_f64(),
            };
            let labels = [("resource_name", name.as_str())];
            encoder
                .encode_family(&labels.as_slice())?
                .encode_gauge(&secs)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }

    fn is_empty(&self) -> bool {
        self.0.lock().map(|m| m.is_empty()).unwrap_or(false)
    }
}

impl prometheus_client::metrics::TypedMetric for CertExpiry {
    const TYPE: MetricType = MetricType::Gauge;
}

/// Unix seconds of `t`.
pub fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn citadel_counters_keep_istio_names_and_expiry_counts_down() {
        let mut r = Registry::default();
        let ca = CaMetrics::default();
        ca.register(&mut r);
        ca.csr.inc();
        ca.csr.inc();
        ca.sign_error("TTL_ERROR");
        let exp = CertExpiry::default();
        r.register("istio_agent_cert_expiry_seconds", "x", exp.clone());
        exp.set(
            "spiffe://cluster.local/ns/a/sa/b",
            SystemTime::now() + Duration::from_secs(100),
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(
            out.contains("# TYPE citadel_server_csr_count counter\ncitadel_server_csr_count 2\n"),
            "{out}"
        );
        assert!(
            out.contains("citadel_server_csr_sign_err_count{error=\"TTL_ERROR\"} 1"),
            "{out}"
        );
        let line = out
            .lines()
            .find(|l| l.starts_with("istio_agent_cert_expiry_seconds{resource_name=\"spiffe://cluster.local/ns/a/sa/b\"} "))
            .unwrap_or_else(|| panic!("{out}"));
        let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((90.0..=100.0).contains(&v), "{line}");
        exp.remove("spiffe://cluster.local/ns/a/sa/b");
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(!out.contains("istio_agent_cert_expiry_seconds{"), "{out}");
    }
}
