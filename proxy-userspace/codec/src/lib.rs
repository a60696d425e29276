//! Strait's HTTP request codec and matching: the code that reads bytes a
//! client controls before any routing decision, in its own crate so that
//! it can be fuzzed without building the daemon (`fuzz/`, run by
//! `cargo xtask fuzz`).
//!
//! - [`h1`]: the HTTP/1.1 codec — the request parser of the outbound
//!   listener's server loop ([`h1::parse`]), the upstream client connection
//!   ([`h1::Conn`]) and its response parser and bodies.
//! - [`head`]: the request head the pipeline works on ([`head::ReqHead`]).
//! - [`body`]: the body type requests and responses travel with.
//! - [`normalize`]: Istio's `pathNormalization` before route and policy
//!   matching.
//! - [`matching`]: compiled `HTTPMatchRequest`s (Istio `StringMatch` on
//!   path, method, authority, headers, query parameters).
//!
//! Layering (ARCHITECTURE.md): `strait` (serving, upstream) uses this
//! crate; this crate uses neither `strait` nor `strait-config`.
pub mod body;
pub mod h1;
pub mod head;
pub mod matching;
pub mod normalize;
