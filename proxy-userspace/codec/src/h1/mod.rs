//! Strait's own HTTP/1.1 codec: the client side for pooled upstream
//! connections, and the request parser of the outbound listener's server
//! loop ([`parse`]; the loop itself is `strait::proxy::h1::server`).
//!
//! hyper's connection-level client runs every connection as its own task
//! and hands requests and responses over channels: two task wake-ups and
//! several allocations per request. Here the request's own task writes the
//! request and reads the response head on the connection it checked out,
//! and the response body reads the rest, so the proxy does what nginx does
//! per request: one `writev`/`write` upstream and the reads it needs.
//! Parsing is `httparse` (hyper's parser); framing follows RFC 9112 §6:
//! `Transfer-Encoding: chunked`, `Content-Length`, or read to close.
//!
//! Upgrades (WebSocket) still use hyper's client (`strait::proxy::pool`),
//! and hyper's server takes over any connection the server loop does not
//! handle (see [`parse::Step::Handoff`]).
pub mod body;
pub mod conn;
pub mod date;
pub mod io;
pub mod parse;
pub mod prefixed;
pub mod request;
pub mod response;
pub mod spans;

pub use conn::Conn;
