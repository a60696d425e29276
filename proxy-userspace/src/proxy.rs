//! Strait's HTTP/1.1 codec and the request/response types the proxy
//! layers share, from the `strait-codec` crate (`proxy-userspace/codec`,
//! fuzzed on its own by `cargo xtask fuzz`): `h1` (the client side of
//! pooled upstream connections and the request parser; plus, here, the
//! outbound listener's server loop `h1::server`), `head` (request heads and
//! header blocks), `body` (the proxy's body type). `h1/server.rs` calls up
//! into `serve` as the one listed exception (`cargo xtask layers`).
pub use strait_codec::{body, head};

pub mod h1;
