//! The native IPv6 service maps (`proxy_common::maps6`), beside the IPv4
//! ones of [`crate::maps`].
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use proxy_common::{
    Backend6, BackendKey, ClientKey6, MaglevTable, OrigDst6, ProxyConfig6, RevNatKey6,
    ServiceKey6, ServiceValue, SockNat6, TcpStats, TcpStatsKey6, Workload, XlbConfig6,
    XlbConn6, XlbReal6, XlbVipBucket6,
};

/// `BPF_F_NO_PREALLOC`, as in [`crate::maps`].
const NO_PREALLOC: u32 = 1;

/// IPv6 VIP:port:proto → mode and backend set.
#[map(name = "SERVICES6")]
pub static SERVICES6: HashMap<ServiceKey6, ServiceValue> =
    HashMap::with_max_entries(proxy_common::MAX_SERVICES, 0);

/// (backend set, slot) → IPv6 backend address.
#[map(name = "BACKENDS6")]
pub static BACKENDS6: HashMap<BackendKey, Backend6> =
    HashMap::with_max_entries(proxy_common::MAX_BACKENDS, NO_PREALLOC);

/// What connect6 did to a socket with a native IPv6 destination.
#[map(name = "SOCK_NAT6")]
pub static SOCK_NAT6: Array<SockNat6> = Array::with_max_entries(proxy_common::SOCK_NAT6_SLOTS, 0);

/// (socket cookie, rewritten IPv6 address) → VIP, for unconnected UDP.
#[map(name = "REV_NAT6")]
pub static REV_NAT6: LruHashMap<RevNatKey6, OrigDst6> =
    LruHashMap::with_max_entries(proxy_common::MAX_CONNECTIONS, 0);

/// Meshed pod IPv6 addresses.
#[map(name = "WORKLOADS6")]
pub static WORKLOADS6: HashMap<[u32; 4], Workload> =
    HashMap::with_max_entries(proxy_common::MAX_WORKLOADS, 0);

/// The node proxy's IPv6 outbound listener (index 0; port 0: none).
#[map(name = "PROXY_CONFIG6")]
pub static PROXY_CONFIG6: Array<ProxyConfig6> = Array::with_max_entries(1, 0);

/// Client `[ip]:port` → original destination of a redirected IPv6
/// connection, for the proxy's `accept()`.
#[map(name = "ORIG_DST6")]
pub static ORIG_DST6: LruHashMap<ClientKey6, OrigDst6> =
    LruHashMap::with_max_entries(proxy_common::MAX_CONNECTIONS, 0);

/// `BPF_F_NO_COMMON_LRU`, as in [`crate::maps`].
const NO_COMMON_LRU: u32 = 2;

/// External IPv6 VIP:port/proto → ring (XDP load balancer, IPv6 side): the
/// daemon's two-choice buckets (`proxy_common::XLB_VIPS6`), read with
/// inlined array lookups.
#[map(name = "XLB_VIP6_BUCKETS")]
pub static XLB_VIPS6: Array<XlbVipBucket6> =
    Array::with_max_entries(proxy_common::XLB_VIP6_BUCKETS, 0);

/// Ring id → Maglev table of indexes into `XLB_REALS6`.
#[map(name = "XLB_RINGS6")]
pub static XLB_RINGS6: HashMap<u32, MaglevTable> =
    HashMap::with_max_entries(proxy_common::MAX_XLB_VIPS6, NO_PREALLOC);

/// Real index → node IPv6 address.
#[map(name = "XLB_REALS6")]
pub static XLB_REALS6: Array<XlbReal6> = Array::with_max_entries(proxy_common::MAX_XLB_REALS6, 0);

/// IPv6 flow hash → real and the flow (`proxy_common::XLB_CONNS6`), LRU
/// per CPU.
#[map(name = "XLB_FLOWS6")]
pub static XLB_CONNS6: LruHashMap<u64, XlbConn6> =
    LruHashMap::with_max_entries(proxy_common::MAX_XLB_CONNS6, NO_COMMON_LRU);

/// Per-CPU flow cache in front of `XLB_FLOWS6`
/// (`proxy_common::XLB_FLOW_CACHE6`).
#[map(name = "XLB_FLOW_CACHE6")]
pub static XLB_FLOW_CACHE6: PerCpuArray<XlbConn6> =
    PerCpuArray::with_max_entries(proxy_common::XLB_FLOW_CACHE6_SLOTS, 0);

/// Outer IPv6 source address and gateway MAC.
#[map(name = "XLB_CONFIG6")]
pub static XLB_CONFIG6: Array<XlbConfig6> = Array::with_max_entries(1, 0);

/// Kernel-balanced native IPv6 TCP connections and bytes
/// (`proxy_common::TCP_STATS6`).
#[map(name = "TCP_STATS6")]
pub static TCP_STATS6: PerCpuHashMap<TcpStatsKey6, TcpStats> =
    PerCpuHashMap::with_max_entries(proxy_common::MAX_TCP_STATS, NO_PREALLOC);
