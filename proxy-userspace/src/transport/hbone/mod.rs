//! HBONE: Istio ambient's tunnel between workloads, on the wire exactly as
//! ztunnel speaks it (see `../shared/hbone/README.md`): mutual TLS 1.3 with
//! the workloads' SPIFFE certificates, HTTP/2, one `CONNECT` stream per
//! proxied TCP connection to `<destination pod IP>:15008`.
//!
//! - [`tls`]: rustls configs and the SPIFFE verifiers;
//! - [`server`]: the destination side: TLS termination, `CONNECT`
//!   checks (400/401/503), delivery to the pod, bytes both ways;
//! - [`stream`]: one `CONNECT` stream as bytes, on the `h2` crate
//!   directly (no per-stream bridge task), and the keep-alive PINGs;
//! - [`client`]: the source side: a pool of mTLS HTTP/2 connections per
//!   (source identity, destination identity, destination address), as
//!   ztunnel's `WorkloadHBONEPool`, and `CONNECT` streams over them;
//! - [`control`]: the external authorizer's check requests through the
//!   same outbound decision ([`mesh::route`]).
pub mod client;
pub mod control;
pub mod mesh;
pub mod server;
pub mod stream;
pub mod tls;

use std::time::Duration;

pub use client::{HboneStream, Outbound, OutboundRequest};
pub use mesh::{MeshOutbound, MeshView, Tunnel, Upstream};
pub use server::{ConnectCheck, InboundHandler, InnerStream};

/// The HBONE port on every meshed pod IP.
pub const PORT: u16 = 15008;

/// Ports a `CONNECT` may not target (ztunnel answers 503): the node
/// proxy's own outbound, inbound plaintext and HBONE ports.
pub const PROTECTED_PORTS: [u16; 3] = [15001, 15006, 15008];

/// HTTP/2 settings, as ztunnel sets them (`ztunnel/src/proxy/h2.rs`).
pub mod settings {
    use super::Duration;
    /// Server `MAX_CONCURRENT_STREAMS`.
    pub const MAX_CONCURRENT_STREAMS: u32 = 200;
    /// Stream flow-control window.
    pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
    /// Connection flow-control window.
    pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
    /// `MAX_FRAME_SIZE`.
    pub const MAX_FRAME_SIZE: u32 = 1024 * 1024;
    /// PING interval.
    pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
    /// A connection that has not answered a PING for this long is dropped.
    pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
    /// Streams per pooled connection before another is opened.
    pub const MAX_STREAMS_PER_CONNECTION: usize = 100;
    /// Idle pooled connections are closed after this.
    pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
    /// TLS handshake and upstream connect limit.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
}

/// Errors of the HBONE transport.
#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    /// A rustls config could not be built.
    #[error("HBONE TLS config: {0}")]
    Config(String),
    /// The node has no certificate for this workload (yet).
    #[error("no certificate for {0} on this node")]
    NoCertificate(String),
    /// TCP connect or I/O failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The TLS handshake failed (bad certificate, wrong identity, protocol).
    #[error("TLS handshake: {0}")]
    Tls(#[source] std::io::Error),
    /// The peer did not negotiate ALPN `h2`.
    #[error("peer did not negotiate ALPN h2")]
    Alpn,
    /// The peer's certificate has no SPIFFE ID.
    #[error("peer certificate without a SPIFFE ID")]
    NoPeerIdentity,
    /// The HTTP/2 handshake or stream failed.
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    /// The server answered the `CONNECT` with this status.
    #[error("CONNECT answered {0}")]
    Status(http::StatusCode),
    /// Connect or handshake took longer than [`settings::CONNECT_TIMEOUT`].
    #[error("timed out")]
    Timeout,
}

#[cfg(test)]
mod tests;
