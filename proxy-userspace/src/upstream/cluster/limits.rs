//! Envoy circuit breakers from DestinationRule `connectionPool`, checked
//! before a request is sent; overflow is a local 503 with flag `UO`.
//!
//! HTTP/1.1 upstreams carry one request per connection at a time, so
//! `tcp.maxConnections` bounds the requests in flight, and up to
//! `http.http1MaxPendingRequests` more wait for a connection; the rest
//! overflow. `http.http2MaxRequests` bounds requests in flight for every
//! protocol, `http.maxRetries` the retries in flight.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Compiled `connectionPool` limits; `u32::MAX` = unlimited (Envoy/Istio
/// defaults are 2^32-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `tcp.maxConnections`.
    pub max_connections: u32,
    /// `http.http1MaxPendingRequests`.
    pub max_pending_requests: u32,
    /// `http.http2MaxRequests`.
    pub max_requests: u32,
    /// `http.maxRetries`.
    pub max_retries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: u32::MAX,
            max_pending_requests: u32::MAX,
            max_requests: u32::MAX,
            max_retries: u32::MAX,
        }
    }
}

/// A cluster's live circuit-breaker counters. Cheap to clone: clones
/// share the counters. The upstream registry keeps one per cluster for the
/// life of the process and hands the same one to every snapshot's cluster,
/// so a config swap never has two breakers counting the same upstream
/// (Envoy keeps a cluster's resource manager while the cluster lives).
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    max_connections: AtomicU32,
    max_pending_requests: AtomicU32,
    max_requests: AtomicU32,
    max_retries: AtomicU32,
    /// HTTP/1.1 connection slots: `max_connections` permits when limited
    /// (none while unlimited: then it is not consulted).
    connections: Arc<Semaphore>,
    /// Permits still to take out of circulation after a lowered
    /// `maxConnections` found them in use: released ones are forgotten.
    connection_debt: AtomicU32,
    pending: AtomicU32,
    requests: AtomicU32,
    retries: AtomicU32,
}

/// Semaphore permits for a `maxConnections` value (0 = unlimited: no
/// semaphore use).
fn permits(max_connections: u32) -> u32 {
    if max_connections == u32::MAX {
        0
    } else {
        max_connections.max(1)
    }
}

/// Admission for one request; dropping it (when the response ends) frees
/// the slots.
#[derive(Debug)]
pub struct Admission {
    state: Arc<State>,
    connection: Option<OwnedSemaphorePermit>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.state.requests.fetch_sub(1, Ordering::Relaxed);
        if let Some(p) = self.connection.take() {
            let debt = &self.state.connection_debt;
            if debt.load(Ordering::Relaxed) > 0
                && debt
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1))
                    .is_ok()
            {
                p.forget();
            }
        }
    }
}

/// A retry in flight; dropping it frees the slot.
#[derive(Debug)]
pub struct RetrySlot(Arc<State>);

impl Drop for RetrySlot {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::Relaxed);
    }
}

impl CircuitBreaker {
    /// Counters for `limits`.
    pub fn new(limits: Limits) -> Self {
        let state = State {
            max_connections: AtomicU32::new(limits.max_connections),
            max_pending_requests: AtomicU32::new(limits.max_pending_requests),
            max_requests: AtomicU32::new(limits.max_requests),
            max_retries: AtomicU32::new(limits.max_retries),
            connections: Arc::new(Semaphore::new(permits(limits.max_connections) as usize)),
            connection_debt: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            retries: AtomicU32::new(0),
        };
        Self {
            state: Arc::new(state),
        }
    }

    /// The configured limits.
    pub fn limits(&self) -> Limits {
        let st = &self.state;
        Limits {
            max_connections: st.max_connections.load(Ordering::Relaxed),
            max_pending_requests: st.max_pending_requests.load(Ordering::Relaxed),
            max_requests: st.max_requests.load(Ordering::Relaxed),
            max_retries: st.max_retries.load(Ordering::Relaxed),
        }
    }

    /// Applies new limits to the live counters (a DestinationRule edit):
    /// requests in flight stay counted. A lowered `maxConnections` takes
    /// effect as slots are given back. Called by the registry only (one
    /// writer).
    pub fn set_limits(&self, limits: Limits) {
        let st = &self.state;
        let old = permits(
            st.max_connections
                .swap(limits.max_connections, Ordering::Relaxed),
        );
        let new = permits(limits.max_connections);
        if new > old {
            // Settle debt first, then grow.
            let mut grow = new - old;
            let debt = st.connection_debt.load(Ordering::Relaxed);
            let paid = debt.min(grow);
            st.connection_debt.fetch_sub(paid, Ordering::Relaxed);
            grow -= paid;
            st.connections.add_permits(grow as usize);
        } else if new < old {
            let shrink = old - new;
            let forgotten = st.connections.forget_permits(shrink as usize) as u32;
            st.connection_debt
                .fetch_add(shrink - forgotten, Ordering::Relaxed);
        }
        st.max_pending_requests
            .store(limits.max_pending_requests, Ordering::Relaxed);
        st.max_requests
            .store(limits.max_requests, Ordering::Relaxed);
        st.max_retries.store(limits.max_retries, Ordering::Relaxed);
    }

    /// Requests (HTTP) or connections (TCP) admitted and not yet finished.
    pub fn in_flight(&self) -> u32 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Admits a request, waiting for an HTTP/1 connection slot when
    /// `http1` and the pending queue has room. `None` = overflow (`UO`).
    pub async fn admit(&self, http1: bool) -> Option<Admission> {
        let st = &self.state;
        if st.requests.fetch_add(1, Ordering::Relaxed) >= st.max_requests.load(Ordering::Relaxed) {
            st.requests.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        // From here the guard gives the request slot back on every path,
        // including the caller dropping this future while it waits.
        let mut admission = Admission {
            state: st.clone(),
            connection: None,
        };
        if !http1 || st.max_connections.load(Ordering::Relaxed) == u32::MAX {
            return Some(admission);
        }
        let sem = &st.connections;
        if let Ok(p) = sem.clone().try_acquire_owned() {
            admission.connection = Some(p);
            return Some(admission);
        }
        if st.pending.fetch_add(1, Ordering::Relaxed)
            >= st.max_pending_requests.load(Ordering::Relaxed)
        {
            st.pending.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        struct Pending<'a>(&'a AtomicU32);
        impl Drop for Pending<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let pending = Pending(&st.pending);
        admission.connection = sem.clone().acquire_owned().await.ok();
        drop(pending);
        Some(admission)
    }

    /// Admits a TCP connection (`tcp.maxConnections`, no queue, as Envoy's
    /// tcp_proxy). `None` = overflow (`UO`).
    pub fn admit_connection(&self) -> Option<Admission> {
        let st = &self.state;
        st.requests.fetch_add(1, Ordering::Relaxed);
        let mut admission = Admission {
            state: st.clone(),
            connection: None,
        };
        if st.max_connections.load(Ordering::Relaxed) != u32::MAX {
            admission.connection = Some(st.connections.clone().try_acquire_owned().ok()?);
        }
        Some(admission)
    }

    /// Takes a retry slot; `None` when `maxRetries` retries are in flight.
    pub fn retry(&self) -> Option<RetrySlot> {
        let st = &self.state;
        if st.retries.fetch_add(1, Ordering::Relaxed) >= st.max_retries.load(Ordering::Relaxed) {
            st.retries.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(RetrySlot(st.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_connection_one_pending_then_overflow() {
        let cb = CircuitBreaker::new(Limits {
            max_connections: 1,
            max_pending_requests: 1,
            ..Default::default()
        });
        let a = cb.admit(true).await.expect("first gets the connection");
        let waiting = cb.admit(true);
        tokio::pin!(waiting);
        // Poll once so the second request is queued.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), waiting.as_mut())
                .await
                .is_err()
        );
        assert!(cb.admit(true).await.is_none(), "third overflows");
        drop(a);
        assert!(waiting.await.is_some());
        let r = CircuitBreaker::new(Limits {
            max_requests: 1,
            ..Default::default()
        });
        let _x = r.admit(false).await.unwrap();
        assert!(r.admit(false).await.is_none());
    }

    #[tokio::test]
    async fn new_limits_keep_the_requests_in_flight() {
        let cb = CircuitBreaker::new(Limits {
            max_connections: 2,
            max_pending_requests: 0,
            ..Default::default()
        });
        let a = cb.admit(true).await.unwrap();
        let b = cb.admit(true).await.unwrap();
        // Lowered to one while two are in flight: nothing more until both
        // are back, then exactly one at a time.
        cb.set_limits(Limits {
            max_connections: 1,
            max_pending_requests: 0,
            ..Default::default()
        });
        assert!(cb.admit(true).await.is_none());
        drop(a);
        assert!(cb.admit(true).await.is_none(), "still one over the limit");
        drop(b);
        let c = cb.admit(true).await.expect("one slot now");
        assert!(cb.admit(true).await.is_none());
        drop(c);
        // Raised: both slots usable.
        cb.set_limits(Limits {
            max_connections: 2,
            max_pending_requests: 0,
            ..Default::default()
        });
        let _c = cb.admit(true).await.unwrap();
        let _d = cb.admit(true).await.unwrap();
        assert_eq!(cb.in_flight(), 2);
    }
}
