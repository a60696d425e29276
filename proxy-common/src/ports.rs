//! Well-known ports of the node proxy, the same numbers Istio's ztunnel and
//! Envoy sidecars use.

/// Outbound capture listener: connections the kernel redirects (mode REDIRECT).
pub const OUTBOUND: u16 = 15001;
/// Inbound plaintext listener.
pub const INBOUND_PLAINTEXT: u16 = 15006;
/// HBONE inbound listener: HTTP/2 CONNECT over mutual TLS.
pub const HBONE: u16 = 15008;
/// Admin API (config_dump, ready, stats).
pub const ADMIN: u16 = 15000;
/// Prometheus metrics.
pub const METRICS: u16 = 15020;
