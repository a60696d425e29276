//! Transports below the proxy: HBONE, Istio ambient's mutual-TLS tunnel
//! between workloads ([`hbone`]), sockets opened inside a pod's network
//! namespace ([`inpod`]), as ztunnel's in-pod mode does, and TLS
//! origination to upstreams ([`origination`], DestinationRule
//! `SIMPLE`/`MUTUAL`).
pub mod hbone;
pub mod inpod;
pub mod origination;
