//! Types shared by the kernel programs (`proxy-ebpf`) and userspace
//! (`proxy-userspace`): map names, limits, well-known ports and the
//! `#[repr(C)]` keys and values stored in the BPF maps.
//!
//! Byte order: every IPv4 address and port stored in a map is in **network
//! byte order**, exactly as the kernel hands them to the socket hooks
//! (`bpf_sock_addr.user_ip4`, `user_port`), so the programs never convert.
//! Userspace converts with [`ipv4_to_be`] / [`port_to_be`].
#![no_std]

pub mod deny4;
pub mod deny6;
pub mod inpod;
pub mod kfunc;
pub mod layout;
pub mod maglev;
pub mod maps;
pub mod maps6;
pub mod ports;
pub mod sockmap;
pub mod xlb;
pub mod xlb6;

pub use deny4::*;
pub use deny6::*;
pub use inpod::*;
pub use layout::{layout_version, PINNED_XDP_MAPS};
pub use maps::*;
pub use maps6::*;
pub use sockmap::{SockPair, MAX_SOCKMAP, SOCKMAP};
pub use xlb::*;
pub use xlb6::*;

/// An IPv4 address from its host-order `u32` (as `u32::from(Ipv4Addr)`)
/// to the network-byte-order `u32` stored in maps.
pub const fn ipv4_to_be(host_order: u32) -> u32 {
    host_order.to_be()
}

/// A port number to the network-byte-order value stored in maps: the port's
/// two bytes big-endian in the low 16 bits, as `bpf_sock_addr.user_port`
/// holds it.
pub const fn port_to_be(port: u16) -> u16 {
    port.to_be()
}

/// The Maglev table position of a client: a 64-bit finalizer (MurmurHash3's
/// `fmix64`) of the client identity, modulo [`MAGLEV_TABLE_SIZE`]. The kernel
/// uses it on the client's bound IPv4 source address (network byte order) or,
/// when the socket is not bound yet, its network namespace cookie.
pub const fn maglev_position(client: u64) -> u32 {
    (maglev::fmix64(client) % MAGLEV_TABLE_SIZE as u64) as u32
}
