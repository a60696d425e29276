//! The node's workload certificates, for the HBONE/mTLS layer.
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use rustls_pki_types::CertificateDer;

use super::super::certs::{rfc3339, unix, CertInfo, WorkloadCert};
use super::super::SpiffeId;

/// Certificates by identity, plus the trust bundle. Cheap to clone
/// (shared). A renewal replaces the `Arc` for later [`CertStore::get`]
/// calls; a connection that already holds the old one keeps it.
#[derive(Clone, Default)]
pub struct CertStore {
    certs: Arc<RwLock<BTreeMap<SpiffeId, Arc<WorkloadCert>>>>,
    roots: Arc<RwLock<Vec<CertificateDer<'static>>>>,
}

impl CertStore {
    /// An empty store trusting `roots` (the `--ca-root` / CA root).
    pub fn new(roots: Vec<CertificateDer<'static>>) -> Self {
        CertStore {
            certs: Arc::default(),
            roots: Arc::new(RwLock::new(roots)),
        }
    }

    /// The current certificate of `id`.
    pub fn get(&self, id: &SpiffeId) -> Option<Arc<WorkloadCert>> {
        self.certs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Installs (or replaces) a certificate; its roots join the trust bundle.
    pub fn insert(&self, cert: Arc<WorkloadCert>) {
        {
            let mut roots = self.roots.write().unwrap_or_else(|e| e.into_inner());
            for r in &cert.roots {
                if !roots.contains(r) {
                    roots.push(r.clone());
                }
            }
        }
        self.certs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cert.id.clone(), cert);
    }

    /// Drops the certificate of `id`.
    pub fn remove(&self, id: &SpiffeId) -> Option<Arc<WorkloadCert>> {
        self.certs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    /// Every certificate, by identity.
    pub fn list(&self) -> Vec<Arc<WorkloadCert>> {
        self.certs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The trust bundle (mesh roots) as DER.
    pub fn trust_bundle(&self) -> Vec<CertificateDer<'static>> {
        self.roots.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The trust bundle as a rustls root store.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut store = rustls::RootCertStore::empty();
        store.add_parsable_certificates(self.trust_bundle());
        store
    }

    /// What `/certs` shows: per identity the leaf's serial and validity,
    /// the issuer chain and time to renewal; the trust bundle. No key material.
    pub fn to_json(&self) -> serde_json::Value {
        let now = std::time::SystemTime::now();
        let certs: Vec<serde_json::Value> = self
            .list()
            .iter()
            .map(|c| {
                serde_json::json!({
                    "identity": c.id.to_string(),
                    "serial_number": c.leaf.serial,
                    "valid_from": c.leaf.not_before,
                    "expiration_time": c.leaf.not_after,
                    "renew_at": rfc3339(unix(c.renew_at)),
                    "seconds_to_renewal": unix(c.renew_at) - unix(now),
                    "seconds_to_expiration": unix(c.leaf.not_after()) - unix(now),
                    "leaf": c.leaf,
                    "issuer_chain": c.issuers,
                })
            })
            .collect();
        let bundle: Vec<CertInfo> = self
            .trust_bundle()
            .iter()
            .filter_map(|d| CertInfo::from_der(d).ok())
            .collect();
        serde_json::json!({ "certificates": certs, "trust_bundle": bundle })
    }
}
