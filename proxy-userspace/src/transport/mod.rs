//! How the proxy reaches and recognises peers below HTTP: the original
//! destination of a redirected connection (`orig_dst`), protocol sniffing
//! (`sniff`), the TLS ClientHello's SNI (`tls`) and the bidirectional byte
//! copy of proxied streams (`copy`), the back-off of every listener loop
//! (`accept`). HBONE and in-pod
//! sockets (`hbone/`, `inpod.rs`) and TLS origination (`origination.rs`)
//! belong here too. Imports `runtime` and below only (ARCHITECTURE.md).
pub mod accept;
pub mod copy;
pub mod hbone;
pub mod inpod;
pub mod local_delivery;
pub(crate) mod loopback6;
pub(crate) mod orig_dst;
pub mod origination;
pub(crate) mod sniff;
pub(crate) mod tls;
pub(crate) mod verify_sig;

pub use orig_dst::{FixedDestination, OriginalDst, StaticOriginalDst};
