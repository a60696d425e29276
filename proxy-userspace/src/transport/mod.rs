//! Transports below the proxy: HBONE, Istio ambient's mutual-TLS tunnel
//! between workloads ([`hbone`]), and sockets opened inside a pod's network
//! namespace ([`inpod`]), as ztunnel's in-pod mode does.
pub mod hbone;
pub mod inpod;
