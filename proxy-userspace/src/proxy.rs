//! Strait's HTTP/1.1 codec and the request/response types the proxy
//! layers share: `h1` (the client side of pooled upstream connections and
//! the outbound listener's server loop), `head` (request heads and header
//! blocks), `body` (the proxy's body type). It is becoming its own crate
//! (`strait-codec`); until then it sits below `runtime` in the import rule
//! (ARCHITECTURE.md), with `h1/server.rs` calling up into `serve` as the
//! one listed exception (`cargo xtask layers`).
pub mod body;
pub mod h1;
pub mod head;
