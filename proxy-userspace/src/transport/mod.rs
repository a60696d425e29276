//! How connections leave the node towards an upstream: TLS origination
//! (`origination`, DestinationRule `SIMPLE`/`MUTUAL`). The HBONE tunnel
//! and the in-pod sockets live beside it.
pub mod origination;
