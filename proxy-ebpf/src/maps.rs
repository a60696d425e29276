//! Maps shared by the programs. Names and entry types come from
//! `proxy-common` so userspace opens (and pins) them by the same names.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use proxy_common::{
    Backend, BackendKey, ClientKey, DenyConfig, DenyDstKey, DenyV4Key, MaglevTable, OrigDst,
    ProxyConfig, RevNatKey, ServiceKey, ServiceStats, ServiceValue, SockNat, TcpStats, TcpStatsEntry,
    TcpStatsKey, Workload, XlbCachedFlow, XlbConfig, XlbConn, XlbFlow, XlbReal, XlbReal6, XlbStats, XlbVipBucket,
};

/// `BPF_F_NO_PREALLOC`: entries are allocated on insert, so large or
/// sparse maps cost memory only for what userspace writes.
const NO_PREALLOC: u32 = 1;

/// Service VIP:port:proto → mode and backend set.
#[map(name = "SERVICES")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::with_max_entries(proxy_common::MAX_SERVICES, 0);

/// (backend set, slot) → backend address.
#[map(name = "BACKENDS")]
pub static BACKENDS: HashMap<BackendKey, Backend> =
    HashMap::with_max_entries(proxy_common::MAX_BACKENDS, NO_PREALLOC);

/// Backend set id → Maglev lookup table (64 KiB each).
#[map(name = "MAGLEV")]
pub static MAGLEV: HashMap<u32, MaglevTable> =
    HashMap::with_max_entries(proxy_common::MAX_MAGLEV_SERVICES, NO_PREALLOC);

/// Meshed pod IPs whose TCP traffic goes through the node proxy.
#[map(name = "WORKLOADS")]
pub static WORKLOADS: HashMap<u32, Workload> =
    HashMap::with_max_entries(proxy_common::MAX_WORKLOADS, 0);

/// The node proxy's outbound listener (index 0).
#[map(name = "PROXY_CONFIG")]
pub static PROXY_CONFIG: Array<ProxyConfig> = Array::with_max_entries(1, 0);

/// Client {ip, port} → original destination, for the proxy's `accept()`.
#[map(name = "ORIG_DST")]
pub static ORIG_DST: LruHashMap<ClientKey, OrigDst> =
    LruHashMap::with_max_entries(proxy_common::MAX_CONNECTIONS, 0);

/// What connect4/connect6 did to a socket, by socket cookie modulo the size.
#[map(name = "SOCK_NAT")]
pub static SOCK_NAT: Array<SockNat> = Array::with_max_entries(proxy_common::SOCK_NAT_SLOTS, 0);

/// (socket cookie, rewritten address) → address the application asked for,
/// for unconnected UDP (`sendmsg()` to a VIP).
#[map(name = "REV_NAT")]
pub static REV_NAT: LruHashMap<RevNatKey, OrigDst> =
    LruHashMap::with_max_entries(proxy_common::MAX_CONNECTIONS, 0);

/// Per-service counters, per CPU, by `ServiceValue::stats_index`.
#[map(name = "SERVICE_STATS")]
pub static SERVICE_STATS: PerCpuArray<ServiceStats> =
    PerCpuArray::with_max_entries(proxy_common::MAX_SERVICES, 0);

/// Per-backend connection counters, per CPU, by `Backend::stats_index`.
#[map(name = "BACKEND_STATS")]
pub static BACKEND_STATS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(proxy_common::MAX_BACKEND_STATS, 0);

/// Kernel-balanced TCP connections and bytes (`proxy_common::TCP_STATS`).
#[map(name = "TCP_STATS")]
pub static TCP_STATS: PerCpuHashMap<TcpStatsKey, TcpStats> =
    PerCpuHashMap::with_max_entries(proxy_common::MAX_TCP_STATS, NO_PREALLOC);

/// Kernel-balanced IPv4 TCP counters, direct-mapped per CPU
/// (`proxy_common::TCP_STATS_DIRECT`); [`TCP_STATS`] takes the keys that
/// find their slot taken.
#[map(name = "TCP_STATS_DIRECT")]
pub static TCP_STATS_DIRECT: PerCpuArray<TcpStatsEntry> =
    PerCpuArray::with_max_entries(proxy_common::TCP_STATS_DIRECT_SLOTS, 0);

/// IPv4 source prefixes an AuthorizationPolicy DENY drops at XDP → the
/// prefix's counter in [`DENY_STATS`]. `BPF_F_NO_PREALLOC` is mandatory for
/// LPM tries.
#[map(name = "DENY_V4")]
pub static DENY_V4: LpmTrie<u32, u32> =
    LpmTrie::with_max_entries(proxy_common::MAX_DENY_PREFIXES, NO_PREALLOC);

/// The same for IPv6 source prefixes.
#[map(name = "DENY_V6")]
pub static DENY_V6: LpmTrie<[u8; 16], u32> =
    LpmTrie::with_max_entries(proxy_common::MAX_DENY_PREFIXES, NO_PREALLOC);

/// IPv4 deny prefixes by exact (length, masked address).
#[map(name = "DENY_V4_LEN")]
pub static DENY_V4_LEN: HashMap<DenyV4Key, u32> =
    HashMap::with_max_entries(proxy_common::MAX_DENY_PREFIXES, NO_PREALLOC);

/// Destinations of scoped deny prefixes (`proxy_common::DENY_DST`).
#[map(name = "DENY_DST")]
pub static DENY_DST: HashMap<DenyDstKey, u32> =
    HashMap::with_max_entries(proxy_common::MAX_DENY_DESTINATIONS, NO_PREALLOC);

/// How sources are looked up.
#[map(name = "DENY_CONFIG")]
pub static DENY_CONFIG: Array<DenyConfig> = Array::with_max_entries(1, 0);

/// IPv4 deny prefix lengths per /16 (`proxy_common::DENY_V4_SLASH16`).
#[map(name = "DENY_V4_SLASH16")]
pub static DENY_V4_SLASH16: Array<u64> =
    Array::with_max_entries(proxy_common::DENY_SLASH16_ENTRIES, 0);

/// Level 2 of the IPv4 DIR-16-8 deny table: a block of 256 /24 slots per
/// /16 that needs one (`proxy_common::DENY_V4_DIR24`).
#[map(name = "DENY_V4_DIR24")]
pub static DENY_V4_DIR24: Array<u32> =
    Array::with_max_entries(proxy_common::DENY_V4_DIR24_ENTRIES, 0);

/// Packets dropped per deny prefix, per CPU.
#[map(name = "DENY_STATS")]
pub static DENY_STATS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(proxy_common::MAX_DENY_PREFIXES, 0);

/// `BPF_F_NO_COMMON_LRU`: one LRU list per CPU (no cross-CPU lock on
/// insert), as Katran's per-CPU connection tables.
const NO_COMMON_LRU: u32 = 2;

/// External VIP:port/proto → ring (XDP load balancer): two-choice buckets
/// (`proxy_common::XLB_VIPS`), read with inlined array lookups.
#[map(name = "XLB_VIP_BUCKETS")]
pub static XLB_VIPS: Array<XlbVipBucket> =
    Array::with_max_entries(proxy_common::XLB_VIP_BUCKETS, 0);

/// Ring id → Maglev table of real indexes.
#[map(name = "XLB_RINGS")]
pub static XLB_RINGS: HashMap<u32, MaglevTable> =
    HashMap::with_max_entries(proxy_common::MAX_XLB_VIPS, NO_PREALLOC);

/// Real index → node address.
#[map(name = "XLB_REALS")]
pub static XLB_REALS: Array<XlbReal> = Array::with_max_entries(proxy_common::MAX_XLB_REALS, 0);

/// Real index → IPv6 address of an IPv4 VIP's IPv6 real (4in6), read when
/// the `XLB_REALS` entry is flagged `XLB_REAL_IPV6`.
#[map(name = "XLB_REALS4IN6")]
pub static XLB_REALS_4IN6: Array<XlbReal6> =
    Array::with_max_entries(proxy_common::MAX_XLB_REALS, 0);

/// Flow → real, LRU per CPU.
#[map(name = "XLB_CONNS")]
pub static XLB_CONNS: LruHashMap<XlbFlow, XlbConn> =
    LruHashMap::with_max_entries(proxy_common::MAX_XLB_CONNS, NO_COMMON_LRU);

/// Per-CPU flow cache in front of `XLB_CONNS` (`proxy_common::XLB_FLOW_CACHE`).
#[map(name = "XLB_FLOW_CACHE")]
pub static XLB_FLOW_CACHE: PerCpuArray<XlbCachedFlow> =
    PerCpuArray::with_max_entries(proxy_common::XLB_FLOW_CACHE_SLOTS, 0);

/// Outer source address and gateway MAC.
#[map(name = "XLB_CONFIG")]
pub static XLB_CONFIG: Array<XlbConfig> = Array::with_max_entries(1, 0);

/// XDP load balancer counters, per CPU.
#[map(name = "XLB_STATS")]
pub static XLB_STATS: PerCpuArray<XlbStats> = PerCpuArray::with_max_entries(1, 0);
