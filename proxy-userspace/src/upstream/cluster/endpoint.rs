//! One upstream host of a cluster and its live state (active requests,
//! outlier-detection counters, connection pool), shared by every request
//! through atomics. The upstream registry (`registry`) keeps one per
//! (cluster, address) across config swaps.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// A cluster member.
#[derive(Debug)]
pub struct Endpoint {
    /// Address and target port.
    pub addr: SocketAddr,
    /// Pod / workload labels (subset selection already applied).
    pub labels: Arc<BTreeMap<String, String>>,
    /// `addr` as a URI authority (the connection-pool key).
    pub authority: http::uri::Authority,
    /// Requests in flight (LEAST_REQUEST).
    pub(crate) active: AtomicU32,
    /// Consecutive 5xx / locally originated failures.
    pub(crate) consecutive_5xx: AtomicU32,
    /// Consecutive 502/503/504 / connect failures.
    pub(crate) consecutive_gateway: AtomicU32,
    /// Ejected by outlier detection (what the load balancers read).
    pub(crate) ejected: AtomicBool,
    /// While ejected: eligible to come back at the first `interval` sweep
    /// at or after this many ms after the [`now_ms`] epoch.
    pub(crate) ejected_until_ms: AtomicU64,
    /// How many times ejected (the ejection time grows with it, as Envoy's).
    pub(crate) ejections: AtomicU32,
    /// Connection pools to this host, made on first use.
    clients: OnceLock<crate::upstream::pool::Pool>,
}

impl Endpoint {
    /// A healthy endpoint with no traffic yet.
    pub fn new(addr: SocketAddr, labels: Arc<BTreeMap<String, String>>) -> Self {
        let authority = addr
            .to_string()
            .parse()
            .expect("a socket address is a valid authority");
        Self {
            addr,
            labels,
            authority,
            active: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            clients: OnceLock::new(),
        }
    }

    /// The connection pools to this host (created with `pool` on first use).
    pub fn clients(&self, pool: &super::PoolSettings) -> &crate::upstream::pool::Pool {
        self.clients
            .get_or_init(|| crate::upstream::pool::Pool::new(self.addr, pool))
    }

    /// Whether outlier detection has this host ejected right now.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// How many times in a row outlier detection has ejected this host
    /// (the multiplier of `baseEjectionTime`).
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Requests in flight to this host.
    pub fn active_requests(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }
}

/// Milliseconds since the first call (a process-wide monotonic epoch), at
/// least 1 so that 0 can mean "never".
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Counts one request in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct ActiveGuard(pub Arc<Endpoint>);

impl ActiveGuard {
    /// Marks a request started on `ep`.
    pub fn new(ep: Arc<Endpoint>) -> Self {
        ep.active.fetch_add(1, Ordering::Relaxed);
        Self(ep)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
