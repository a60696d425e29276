//! Strait's own HTTP/1.1 codec ([`strait_codec::h1`], re-exported here)
//! and the server loop of the outbound listener ([`server`]).
pub use strait_codec::h1::{body, conn, date, io, parse, prefixed, request, response, spans, Conn};

pub mod server;
