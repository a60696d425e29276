//! Map names, sizes and `#[repr(C)]` entry types.
//!
//! Each type is plain old data with explicit padding so the kernel and
//! userspace agree on its layout byte for byte. Addresses and ports are in
//! network byte order unless a field says otherwise.

/// Service map: [`ServiceKey`] → [`ServiceValue`] (hash).
pub const SERVICES: &str = "SERVICES";
/// Backend slots: [`BackendKey`] → [`Backend`] (hash, not preallocated).
pub const BACKENDS: &str = "BACKENDS";
/// Maglev lookup tables: `u32` backend set id → [`MaglevTable`] (hash, not
/// preallocated).
pub const MAGLEV: &str = "MAGLEV";
/// Meshed pod IPs: `u32` IPv4 address → [`Workload`] (hash).
pub const WORKLOADS: &str = "WORKLOADS";
/// The node proxy's outbound listener: array of one [`ProxyConfig`].
pub const PROXY_CONFIG: &str = "PROXY_CONFIG";
/// Original destination of a redirected connection, by the client's address
/// as the proxy sees it when it accepts: [`ClientKey`] → [`OrigDst`] (LRU).
/// Written by the sockops program when the client's connection is
/// established, from the socket's [`SOCK_NAT`] entry.
pub const ORIG_DST: &str = "ORIG_DST";
/// Per-socket translation of a socket whose `connect()` was rewritten:
/// array of [`SOCK_NAT_SLOTS`] [`SockNat`] entries, a direct-mapped table
/// indexed by the socket cookie modulo its size and tagged with the full
/// cookie. Written by connect4/connect6; read by getpeername4/6 and
/// recvmsg4/6 (reverse NAT) and by the sockops program (original
/// destination of a redirected connection).
///
/// Cilium keeps this reverse NAT in an LRU hash keyed by socket cookie and
/// rewritten address (`cilium_lb4_reverse_sk`), filled for TCP only when
/// getpeername support (`ENABLE_HOST_SERVICES_PEER`) is on. Cookies are
/// handed out in increasing order, so a slot is only reused after
/// [`SOCK_NAT_SLOTS`] newer sockets got a cookie — the same capacity the LRU
/// had, and as with an LRU eviction, a socket that lost its slot reports
/// the backend from getpeername. In exchange the write is an inlined array
/// store next to the previous connection's slot. Measured with
/// `kernel.bpf_stats_enabled` on Linux 6.18, 8 clients on 2 CPUs: connect4
/// costs 230–290 ns with this table, 470–590 ns with an LRU insert and
/// 860–960 ns with socket-local storage (`BPF_MAP_TYPE_SK_STORAGE`, whose
/// create and free take one of a couple of map-wide bucket locks and
/// allocate per socket).
pub const SOCK_NAT: &str = "SOCK_NAT";
/// Reverse NAT for unconnected UDP (`sendmsg()` to a VIP, where one socket
/// may talk to several services): [`RevNatKey`] → [`OrigDst`] (LRU), the
/// address the application sent to. Connected sockets use [`SOCK_NAT`].
pub const REV_NAT: &str = "REV_NAT";
/// Per-service counters: per-CPU array indexed by
/// [`ServiceValue::stats_index`] → [`ServiceStats`]. An array lookup is
/// inlined by the verifier (a bounds check and an add); the per-CPU hash it
/// replaces hashed the service key again on every `connect()`.
pub const SERVICE_STATS: &str = "SERVICE_STATS";
/// Per-backend counters: per-CPU array indexed by
/// [`Backend::stats_index`] → `u64` connections sent to that backend
/// address and protocol (one index per backend address and protocol, shared
/// by every service that has the backend).
pub const BACKEND_STATS: &str = "BACKEND_STATS";
/// Connections the kernel balanced (never those redirected to the node
/// proxy, which reports its own): per-CPU hash [`TcpStatsKey`] →
/// [`TcpStats`], for the keys that did not find a place in
/// [`TCP_STATS_DIRECT`] (where most are counted). The sockops program counts a connection opened when the
/// client's active open completes and, with the socket's state callback
/// turned on at that moment, closed with its exact data bytes at the first
/// state change where they are final (the client's `close()` in
/// `ESTABLISHED`: `FIN_WAIT1`; else `LAST_ACK`, `CLOSING` or `TCP_CLOSE`),
/// turning the callback off there. Userspace exports the sums as Istio's
/// `istio_tcp_*` metrics (`reporter="source"`). Native IPv6 connections
/// go to [`crate::TCP_STATS6`].
pub const TCP_STATS: &str = "TCP_STATS";
/// Maximum number of (client, service, backend) keys in [`TCP_STATS`]; a
/// connection with a new key past it is not counted.
pub const MAX_TCP_STATS: u32 = 65_536;
/// The first place the sockops program counts an IPv4 kernel-balanced
/// connection (the same counts as [`TCP_STATS`]): a per-CPU array of
/// [`TCP_STATS_DIRECT_SLOTS`] [`TcpStatsEntry`], direct-mapped by
/// [`tcp_stats_slot`] of the key. On each CPU the first key that lands in
/// a slot keeps it (entries are never evicted, so nothing counted is
/// lost); another key whose slot that CPU already gave away is counted in
/// [`TCP_STATS`] instead. Userspace sums a key's entries over CPUs and both
/// maps.
///
/// Why: the per-CPU hash costs a `jhash` of the key, a bucket walk and a
/// helper call per update, twice per connection (opened, closed); the
/// array slot is a few ALU operations and an inlined array load.
pub const TCP_STATS_DIRECT: &str = "TCP_STATS_DIRECT";
/// Slots of [`TCP_STATS_DIRECT`] per CPU: a power of two (48 KiB per CPU).
pub const TCP_STATS_DIRECT_SLOTS: u32 = 1024;

/// The [`TCP_STATS_DIRECT`] slot of `k`: a multiplicative hash of its
/// words (Knuth's golden-ratio constant), top bits; in
/// `0..TCP_STATS_DIRECT_SLOTS`.
#[inline(always)]
pub fn tcp_stats_slot(k: &TcpStatsKey) -> u32 {
    let ports = u32::from(k.vport) | (u32::from(k.bport) << 16);
    let h = (k.src ^ k.vip.rotate_left(8) ^ k.backend.rotate_left(16) ^ ports.rotate_left(24))
        .wrapping_mul(0x9e37_79b1);
    h >> (32 - TCP_STATS_DIRECT_SLOTS.trailing_zeros())
}
/// Name of the XDP deny map: LPM trie keyed by IPv4 source prefix (the
/// kernel's `bpf_lpm_trie_key` layout: `u32` prefix length in host order,
/// then the address in network byte order) → `u32` index of the prefix's
/// drop counter in [`DENY_STATS`].
pub const DENY_V4: &str = "DENY_V4";
/// The IPv6 deny trie: `u32` prefix length, then the 16 address bytes →
/// `u32` index in [`DENY_STATS`].
pub const DENY_V6: &str = "DENY_V6";
/// The IPv4 deny prefixes again, by exact (prefix length, masked address):
/// [`DenyV4Key`] → `u32` index in [`DENY_STATS`] (hash). With few distinct
/// prefix lengths ([`DENY_MAX_HASHED_LENGTHS`]), one hash lookup per length
/// present is cheaper than walking the LPM trie (Cilium's "prefilter"
/// makes the same trade with its per-length hash maps).
pub const DENY_V4_LEN: &str = "DENY_V4_LEN";
/// How the deny programs look sources up: array of one [`DenyConfig`].
pub const DENY_CONFIG: &str = "DENY_CONFIG";
/// Destinations a scoped deny prefix protects: [`DenyDstKey`] → `u32`
/// (unused, 0) (hash, not preallocated). A trie value with
/// [`DENY_SCOPED`] set drops only a connection-opening TCP segment (SYN
/// without ACK) whose destination is listed here under the prefix's
/// counter index: an AuthorizationPolicy DENY protects the workloads it
/// selects, not the node or the workloads' own outbound connections.
pub const DENY_DST: &str = "DENY_DST";
/// Flag bit of a deny trie / `DENY_V4_LEN` value: the prefix is scoped to
/// the destinations in [`DENY_DST`]; the low bits are the counter index.
/// Without it the prefix drops every packet from the source (the raw
/// `xdp_deny` filter).
pub const DENY_SCOPED: u32 = 1 << 31;
/// Maximum number of (destination, prefix) pairs in [`DENY_DST`].
pub const MAX_DENY_DESTINATIONS: u32 = 65_536;
/// Up to this many distinct IPv4 prefix lengths are looked up in
/// [`DENY_V4_LEN`]; more use the trie.
pub const DENY_MAX_HASHED_LENGTHS: u32 = 6;
/// IPv4 deny prefixes summarised per /16: array of 65,536 `u64`, entry
/// `i` (the source's top 16 bits, host order) has bit `n` (0–32) set when
/// some IPv4 prefix of length `n` overlaps `i`'s /16 (a /8 sets its bit in
/// 256 entries), and the longest such length in bits
/// [`DENY_SLASH16_LONGEST_SHIFT`]`..+6`. The programs decide IPv4 sources
/// from it alone: an entry of 0 is no deny's (one array load, no hash
/// lookup: most traffic), else only the entry's lengths are looked up in
/// [`DENY_V4_LEN`], longest first (past [`DENY_MAX_HASHED_LENGTHS`], the
/// rest in [`DENY_V4`]). Userspace adds bits before the prefixes that need
/// them and removes them after, so the summary never hides a prefix.
/// This build also keeps a kind and a payload in the entry's other bits
/// (a leaf verdict, or a [`crate::DENY_V4_DIR24`] block: level 1 of the
/// DIR-16-8 table, [`crate::deny4`]), which earlier builds mask off.
pub const DENY_V4_SLASH16: &str = "DENY_V4_SLASH16";
/// Shift of the longest length in a [`DENY_V4_SLASH16`] entry.
pub const DENY_SLASH16_LONGEST_SHIFT: u32 = 56;
/// Entries of [`DENY_V4_SLASH16`].
pub const DENY_SLASH16_ENTRIES: u32 = 1 << 16;
/// Drop counters of the deny prefixes: per-CPU array of
/// [`MAX_DENY_PREFIXES`] `u64` packets, indexed by the tries' values.
pub const DENY_STATS: &str = "DENY_STATS";

/// Every map the socket programs share; the loader pins each one under
/// `<bpffs>/strait/<node>/<name>` and reuses the pins on restart.
/// `TCP_STATS` is pinned so a restarted daemon reads the counters the
/// programs it keeps attached write.
pub const PINNED_MAPS: [&str; 12] = [
    SERVICES,
    BACKENDS,
    MAGLEV,
    WORKLOADS,
    PROXY_CONFIG,
    ORIG_DST,
    SOCK_NAT,
    REV_NAT,
    SERVICE_STATS,
    BACKEND_STATS,
    TCP_STATS,
    TCP_STATS_DIRECT,
];

/// Maximum number of services (VIP, port, protocol) in [`SERVICES`], and
/// the size of [`SERVICE_STATS`].
pub const MAX_SERVICES: u32 = 65_536;
/// Maximum number of backend slots over all services in [`BACKENDS`]
/// (twice what one snapshot may use, so a new set fits beside the old one
/// while it is swapped in).
pub const MAX_BACKENDS: u32 = 1_048_576;
/// Maximum number of slots one service's weighted backend set expands to;
/// larger weight sums are scaled down proportionally.
pub const MAX_SLOTS_PER_SERVICE: u32 = 4096;
/// Maximum number of Maglev services (one [`MaglevTable`] each).
pub const MAX_MAGLEV_SERVICES: u32 = 16_384;
/// Maglev lookup table size M: a prime, as the Maglev paper requires, and
/// Cilium's default (`--bpf-lb-maglev-table-size=16381`). About 100× the
/// backend count keeps the load imbalance under 1%.
pub const MAGLEV_TABLE_SIZE: u32 = 16_381;
/// Maximum number of meshed pod IPs in [`WORKLOADS`].
pub const MAX_WORKLOADS: u32 = 65_536;
/// Entries of each connection-tracking LRU ([`ORIG_DST`], [`REV_NAT`]).
pub const MAX_CONNECTIONS: u32 = 131_072;
/// Size of [`SOCK_NAT`]: a power of two, so the slot of a cookie is its low
/// bits.
pub const SOCK_NAT_SLOTS: u32 = 131_072;
/// Maximum number of backend addresses (per protocol) with counters in
/// [`BACKEND_STATS`]: the size of that array.
pub const MAX_BACKEND_STATS: u32 = 262_144;
/// Maximum number of deny prefixes in [`DENY_V4`] and [`DENY_V6`]
/// together (the size of [`DENY_STATS`]).
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
    /// listener ([`super::PROXY_CONFIG`]) and remembers the original
    /// destination. TCP only: UDP to such a service is balanced over its
    /// backend set like [`L4`] (the proxy has no UDP listener; Istio's
    /// sidecar and ztunnel capture TCP only).
    pub const REDIRECT: u8 = 1;
}

/// Backend choice in [`ServiceValue::lb`].
pub mod lb {
    /// Uniform random slot per connection (slots repeat a backend in
    /// proportion to its weight).
    pub const RANDOM: u8 = 0;
    /// Next slot per connection, one cursor per CPU (like Envoy's round
    /// robin, one per worker thread); slots are in smooth weighted order.
    pub const ROUND_ROBIN: u8 = 1;
    /// Maglev consistent hash of the client: the bound source address, else
    /// the client's network namespace (one per pod) — see [`super::MaglevTable`].
    pub const MAGLEV: u8 = 2;
}

/// Key of [`SERVICES`]: a service's virtual IP, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
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
    /// Identifier of the service's backend set in [`BACKENDS`] and
    /// [`MAGLEV`]. A changed set gets a new id, so swapping this one entry
    /// switches new connections atomically.
    pub svc_id: u32,
    /// Number of backend slots `0..backend_count` in [`BACKENDS`]; 0 means
    /// no usable backend and `connect()` fails at once with `ECONNREFUSED`.
    pub backend_count: u32,
    /// [`mode::L4`] or [`mode::REDIRECT`].
    pub mode: u8,
    /// [`lb::RANDOM`], [`lb::ROUND_ROBIN`] or [`lb::MAGLEV`].
    pub lb: u8,
    /// Reserved; 0.
    pub flags: u8,
    /// Always 0.
    pub pad: u8,
    /// The service's slot in [`SERVICE_STATS`], `0..MAX_SERVICES`, assigned
    /// by userspace when the service is first written and kept while it
    /// exists (backend set swaps keep its counters).
    pub stats_index: u32,
}

/// Key of [`BACKENDS`]: slot `slot` of the backend set `svc_id`.
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Backend {
    /// Backend IPv4 address, network byte order.
    pub ip: u32,
    /// Backend port, network byte order.
    pub port: u16,
    /// Always 0.
    pub pad: u16,
    /// The backend's slot in [`BACKEND_STATS`], `0..MAX_BACKEND_STATS`: one
    /// per backend address and protocol, assigned by userspace.
    pub stats_index: u32,
}

/// Value of [`MAGLEV`]: the Maglev lookup table of one backend set; entry
/// `hash(client) % MAGLEV_TABLE_SIZE` is the slot in [`BACKENDS`] to use.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    /// Slot index per table position.
    pub slots: [u32; MAGLEV_TABLE_SIZE as usize],
}

/// Value of [`WORKLOADS`]: a meshed pod IP; TCP to it is redirected to the
/// node proxy like a [`mode::REDIRECT`] service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Workload {
    /// Reserved; 0.
    pub flags: u32,
}

/// The single entry of [`PROXY_CONFIG`]: the node proxy's outbound
/// listener. Port 0 means "not configured": redirection is off.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProxyConfig {
    /// Outbound listener IPv4 address, network byte order.
    pub ip: u32,
    /// Outbound listener port, network byte order (15001 by default).
    pub port: u16,
    /// Always 0.
    pub pad: u16,
}

/// An IPv4 socket address stored as a map value: value of [`ORIG_DST`] and
/// [`REV_NAT`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OrigDst {
    /// IPv4 address, network byte order.
    pub ip: u32,
    /// Port, network byte order.
    pub port: u16,
    /// Always 0.
    pub pad: u16,
}

/// Key of [`ORIG_DST`]: the client's local address of a redirected
/// connection, i.e. the peer address the proxy's `accept()` returns.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ClientKey {
    /// Client IPv4 address, network byte order.
    pub ip: u32,
    /// Client port, network byte order.
    pub port: u16,
    /// Always 0.
    pub pad: u16,
}

/// Key of [`REV_NAT`]: a socket and the address its destination was
/// rewritten to (the backend, or the proxy).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RevNatKey {
    /// Socket cookie (`bpf_get_socket_cookie`).
    pub cookie: u64,
    /// Rewritten IPv4 address, network byte order.
    pub ip: u32,
    /// Rewritten port, network byte order.
    pub port: u16,
    /// Always 0.
    pub pad: u16,
}

/// Flags of [`SockNat::flags`].
pub mod sock_nat {
    /// The socket's destination was rewritten by connect4/connect6: the
    /// entry is live. Cleared when a UDP socket later connects somewhere
    /// that is not rewritten.
    pub const REWRITTEN: u32 = 1;
    /// The destination was the node proxy ([`super::mode::REDIRECT`] or a
    /// meshed pod IP): the sockops program publishes
    /// [`SockNat::orig`] under the client's address in [`super::ORIG_DST`].
    pub const REDIRECTED: u32 = 2;
}

/// Value of [`SOCK_NAT`]: what connect4/connect6 did to one socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockNat {
    /// Cookie of the socket the entry belongs to (`bpf_get_socket_cookie`):
    /// a reader whose socket has another cookie ignores the entry.
    pub cookie: u64,
    /// The address the destination was rewritten to (a backend or the node
    /// proxy), IPv4 network byte order: the peer the kernel reports, which
    /// getpeername/recvmsg translate back.
    pub to: OrigDst,
    /// The address the application asked for (the VIP, or the original
    /// destination of a redirected connection), IPv4 network byte order.
    pub orig: OrigDst,
    /// [`sock_nat`] flags.
    pub flags: u32,
    /// The client's address (IPv4, network byte order) as the sockops
    /// program counted the connection opened (`TCP_STATS` key); 0 before,
    /// for redirected connections, or when an older build wrote the record.
    /// The release counter's key when a disconnect (`connect(AF_UNSPEC)`)
    /// cleared the socket's own source address.
    pub src: u32,
}

/// Value of [`SERVICE_STATS`] (one per CPU; userspace sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceStats {
    /// Connections (TCP `connect()`, UDP `connect()`/`sendmsg()`) balanced
    /// or redirected. On each CPU it is also the round-robin cursor.
    pub connections: u64,
    /// Connections refused because the service had no usable backend
    /// (Envoy's `upstream_cx_none_healthy`).
    pub no_backend: u64,
}

/// Key of [`TCP_STATS`]: who connected to which service through which
/// backend (IPv4, network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct TcpStatsKey {
    /// The client's (pod's) address.
    pub src: u32,
    /// The service VIP the client asked for; 0 when the socket's
    /// [`SOCK_NAT`] slot was reused before it closed (the service is then
    /// found from the backend).
    pub vip: u32,
    /// The backend the kernel chose.
    pub backend: u32,
    /// Service port; 0 with `vip` 0.
    pub vport: u16,
    /// Backend port.
    pub bport: u16,
}

/// Value of [`TCP_STATS`] (one per CPU; userspace sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpStats {
    /// Connections established.
    pub opened: u64,
    /// Connections closed.
    pub closed: u64,
    /// Data bytes the client wrote (acknowledged, or still queued when it
    /// closed), over closed connections (Istio's
    /// `istio_tcp_received_bytes_total`: bytes received during the
    /// request).
    pub sent: u64,
    /// Data bytes the client received (the peer's FIN not counted), over
    /// closed connections (Istio's `istio_tcp_sent_bytes_total`: bytes
    /// sent during the response).
    pub received: u64,
}

/// Value of [`TCP_STATS_DIRECT`]: a key and its counts on one CPU; an
/// all-zero key is a free slot (no socket has source address 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpStatsEntry {
    /// Whose counts these are.
    pub key: TcpStatsKey,
    /// The counts.
    pub stats: TcpStats,
}

/// Key of [`DENY_V4_LEN`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DenyV4Key {
    /// Prefix length, 0–32.
    pub prefix_len: u32,
    /// The address with the bits past `prefix_len` cleared, **host** byte
    /// order (as `u32::from(Ipv4Addr)`).
    pub addr: u32,
}

/// Key of [`DENY_DST`]: a protected destination and the deny prefix
/// (by its counter index) that protects it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct DenyDstKey {
    /// Destination address as it appears in the packet: IPv6, or IPv4 as
    /// an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
    pub addr: [u8; 16],
    /// The prefix's counter index (its trie value without
    /// [`DENY_SCOPED`]).
    pub index: u32,
}

/// [`DenyConfig`] lookup modes.
pub mod deny_mode {
    /// Walk the LPM trie (the zeroed default, so a trie filled without a
    /// config is used).
    pub const TRIE: u32 = 0;
    /// One [`super::DENY_V4_LEN`] lookup per length in
    /// [`super::DenyConfig::v4_lengths`], longest first.
    pub const BY_LENGTH: u32 = 1;
    /// No prefix: skip the lookup.
    pub const EMPTY: u32 = 2;
    /// IPv4 sources are decided by their [`super::DENY_V4_SLASH16`] entry
    /// (which lengths to look up in [`super::DENY_V4_LEN`]; none: not
    /// denied). What userspace sets for any non-empty IPv4 list; the
    /// programs read only the summary for IPv4, whatever the mode.
    pub const BY_SLASH16: u32 = 3;
    /// What earlier builds set for a non-empty IPv6 list: sources first
    /// tested in their "maybe" bitmap ([`crate::DENY_V6_SUMMARY_V1`]), then
    /// the [`super::DENY_V6`] trie. This build's programs walk the trie.
    pub const BY_SUMMARY6: u32 = 4;
    /// IPv6 sources are decided by their [`crate::DENY_V6_BUCKETS`]
    /// (a slot prefix compared in place, the other lengths looked up in
    /// [`crate::DENY_V6_LEN`]; none: not denied), the [`super::DENY_V6`]
    /// trie only past
    /// [`crate::DENY_V6_MAX_HASHED_LENGTHS`] lengths. What userspace sets
    /// for a non-empty IPv6 list; this build's programs walk the trie for
    /// [`BY_SUMMARY6`] (an earlier daemon's setting, until the next sync).
    pub const BY_LENGTH6: u32 = 5;
}

/// The single entry of [`DENY_CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DenyConfig {
    /// Bit `n` set: some IPv4 prefix has length `n`.
    pub v4_lengths: u64,
    /// IPv4 lookup: a [`deny_mode`] value.
    pub v4_mode: u32,
    /// IPv6 lookup: [`deny_mode::TRIE`], [`deny_mode::BY_LENGTH6`] or
    /// [`deny_mode::EMPTY`] (an earlier build's [`deny_mode::BY_SUMMARY6`]
    /// is read as [`deny_mode::TRIE`]).
    pub v6_mode: u32,
}

/// A backend address and protocol: what a [`BACKEND_STATS`] index stands
/// for (userspace's key when it assigns [`Backend::stats_index`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BackendStatsKey {
    /// Backend IPv4 address, network byte order.
    pub ip: u32,
    /// Backend port, network byte order.
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Always 0.
    pub pad: u8,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are #[repr(C)], Copy, contain only integers and have
    // explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::BackendKey {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::MaglevTable {}
    unsafe impl aya::Pod for super::Workload {}
    unsafe impl aya::Pod for super::ProxyConfig {}
    unsafe impl aya::Pod for super::OrigDst {}
    unsafe impl aya::Pod for super::ClientKey {}
    unsafe impl aya::Pod for super::RevNatKey {}
    unsafe impl aya::Pod for super::ServiceStats {}
    unsafe impl aya::Pod for super::BackendStatsKey {}
    unsafe impl aya::Pod for super::SockNat {}
    unsafe impl aya::Pod for super::DenyV4Key {}
    unsafe impl aya::Pod for super::DenyConfig {}
    unsafe impl aya::Pod for super::DenyDstKey {}
    unsafe impl aya::Pod for super::TcpStatsKey {}
    unsafe impl aya::Pod for super::TcpStats {}
    unsafe impl aya::Pod for super::TcpStatsEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceKey>(), 8);
        assert_eq!(size_of::<ServiceValue>(), 16);
        assert_eq!(size_of::<BackendKey>(), 8);
        assert_eq!(size_of::<Backend>(), 12);
        assert_eq!(size_of::<MaglevTable>(), 4 * 16_381);
        assert_eq!(size_of::<OrigDst>(), 8);
        assert_eq!(size_of::<ClientKey>(), 8);
        assert_eq!(size_of::<RevNatKey>(), 16);
        assert_eq!(size_of::<ServiceStats>(), 16);
        assert_eq!(size_of::<BackendStatsKey>(), 8);
        assert_eq!(size_of::<SockNat>(), 32);
        assert_eq!(size_of::<DenyV4Key>(), 8);
        assert_eq!(size_of::<DenyConfig>(), 16);
        assert_eq!(size_of::<DenyDstKey>(), 20);
        assert_eq!(size_of::<TcpStatsKey>(), 16);
        assert_eq!(size_of::<TcpStats>(), 32);
        assert_eq!(size_of::<TcpStatsEntry>(), 48);
    }

    #[test]
    fn tcp_stats_slots_are_in_range_and_spread() {
        let mut used = [false; TCP_STATS_DIRECT_SLOTS as usize];
        // One client, one service, 100 backends on neighbouring addresses.
        for b in 0..100u32 {
            let k = TcpStatsKey {
                src: u32::from_be_bytes([10, 0, 0, 5]).to_be(),
                vip: u32::from_be_bytes([10, 96, 0, 10]).to_be(),
                backend: (u32::from_be_bytes([10, 0, 1, 0]) + b).to_be(),
                vport: 80u16.to_be(),
                bport: 8080u16.to_be(),
            };
            let s = tcp_stats_slot(&k);
            assert!(s < TCP_STATS_DIRECT_SLOTS, "{s}");
            used[s as usize] = true;
        }
        // Few collisions: most keys get a slot of their own.
        assert!(used.iter().filter(|u| **u).count() >= 90);
    }
}
