//! Map names, sizes and `#[repr(C)]` entry types.
//!
//! Each type is plain old data with explicit padding so the kernel and
//! userspace agree on its layout byte for byte.

/// Name of the service map: [`ServiceKey`] → [`ServiceValue`].
pub const SERVICES: &str = "SERVICES";
/// Name of the backend map: [`BackendKey`] → [`Backend`].
pub const BACKENDS: &str = "BACKENDS";
/// Name of the XDP deny map: LPM trie keyed by IPv4 source prefix (the
/// kernel's `bpf_lpm_trie_key` layout: `u32` prefix length in host order,
/// then the address in network byte order) → `u32` policy id.
pub const DENY_V4: &str = "DENY_V4";

/// Maximum number of services (VIP, port, protocol) in [`SERVICES`].
pub const MAX_SERVICES: u32 = 65_536;
/// Maximum number of backend slots over all services in [`BACKENDS`].
pub const MAX_BACKENDS: u32 = 1_048_576;
/// Maximum number of deny prefixes in [`DENY_V4`].
pub const MAX_DENY_PREFIXES: u32 = 16_384;

/// IP protocol numbers used in [`ServiceKey::proto`].
pub mod proto {
    /// TCP (IPPROTO_TCP).
    pub const TCP: u8 = 6;
    /// UDP (IPPROTO_UDP).
    pub const UDP: u8 = 17;
}

/// Service modes in [`ServiceValue::mode`].
pub mod mode {
    /// The kernel picks a backend and rewrites the destination.
    pub const L4: u8 = 0;
    /// The kernel rewrites the destination to the node proxy's outbound
    /// listener (port 15001) and remembers the original destination.
    pub const REDIRECT: u8 = 1;
}

/// Key of [`SERVICES`]: a service's virtual IP, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ServiceKey {
    /// Virtual IPv4 address, network byte order.
    pub vip: u32,
    /// Port, network byte order.
    pub port: u16,
    /// IP protocol ([`proto::TCP`] or [`proto::UDP`]).
    pub proto: u8,
    /// Always 0.
    pub pad: u8,
}

/// Value of [`SERVICES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceValue {
    /// Identifier of the service's backend set in [`BACKENDS`].
    pub svc_id: u32,
    /// Number of backend slots `0..backend_count` in [`BACKENDS`]; 0 means
    /// no usable backend and `connect()` fails at once.
    pub backend_count: u32,
    /// [`mode::L4`] or [`mode::REDIRECT`].
    pub mode: u8,
    /// Reserved for load-balancing flags; 0 today.
    pub flags: u8,
    /// Always 0.
    pub pad: u16,
}

/// Key of [`BACKENDS`]: slot `slot` of the service's backend set `svc_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BackendKey {
    /// [`ServiceValue::svc_id`].
    pub svc_id: u32,
    /// Slot index, `0..backend_count`.
    pub slot: u32,
}

/// Value of [`BACKENDS`]: where a connection is rewritten to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// Backend IPv4 address, network byte order.
    pub ip: u32,
    /// Backend port, network byte order.
    pub port: u16,
    /// Always 0.
    pub pad: u16,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are #[repr(C)], Copy, contain only integers and have
    // explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::BackendKey {}
    unsafe impl aya::Pod for super::Backend {}
}
