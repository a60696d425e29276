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

/// A cluster's live circuit-breaker counters.
#[derive(Debug)]
pub struct CircuitBreaker {
    limits: Limits,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    connections: Option<Arc<Semaphore>>,
    pending: AtomicU32,
    requests: AtomicU32,
    retries: AtomicU32,
}

/// Admission for one request; dropping it (when the response ends) frees
/// the slots.
#[derive(Debug)]
pub struct Admission {
    state: Arc<State>,
    _connection: Option<OwnedSemaphorePermit>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.state.requests.fetch_sub(1, Ordering::Relaxed);
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
        let connections = (limits.max_connections != u32::MAX)
            .then(|| Arc::new(Semaphore::new(limits.max_connections.max(1) as usize)));
        let state = State {
            connections,
            pending: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            retries: AtomicU32::new(0),
        };
        Self {
            limits,
            state: Arc::new(state),
        }
    }

    /// The configured limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Admits a request, waiting for an HTTP/1 connection slot when
    /// `http1` and the pending queue has room. `None` = overflow (`UO`).
    pub async fn admit(&self, http1: bool) -> Option<Admission> {
        let st = &self.state;
        if st.requests.fetch_add(1, Ordering::Relaxed) >= self.limits.max_requests {
            st.requests.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        // From here the guard gives the request slot back on every path,
        // including the caller dropping this future while it waits.
        let mut admission = Admission {
            state: st.clone(),
            _connection: None,
        };
        let Some(sem) = st.connections.as_ref().filter(|_| http1) else {
            return Some(admission);
        };
        if let Ok(p) = sem.clone().try_acquire_owned() {
            admission._connection = Some(p);
            return Some(admission);
        }
        if st.pending.fetch_add(1, Ordering::Relaxed) >= self.limits.max_pending_requests {
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
        admission._connection = sem.clone().acquire_owned().await.ok();
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
            _connection: None,
        };
        if let Some(sem) = &st.connections {
            admission._connection = Some(sem.clone().try_acquire_owned().ok()?);
        }
        Some(admission)
    }

    /// Takes a retry slot; `None` when `maxRetries` retries are in flight.
    pub fn retry(&self) -> Option<RetrySlot> {
        if self.state.retries.fetch_add(1, Ordering::Relaxed) >= self.limits.max_retries {
            self.state.retries.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(RetrySlot(self.state.clone()))
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
}
