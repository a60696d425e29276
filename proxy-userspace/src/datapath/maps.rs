//! Typed handles on the pinned maps, taken out of the loaded object so the
//! loader can write several at once.
use anyhow::Context;
use aya::{
    maps::{Array, HashMap, Map, MapData, MapType, PerCpuArray},
    Ebpf,
};
use proxy_common::{
    Backend, Backend6, BackendKey, ClientKey, MaglevTable, OrigDst, ProxyConfig, ServiceKey,
    ServiceKey6, ServiceStats, ServiceValue, SockNat, Workload,
};

/// The socket data path's maps.
pub struct Maps {
    pub services: HashMap<MapData, ServiceKey, ServiceValue>,
    pub backends: HashMap<MapData, BackendKey, Backend>,
    pub maglev: HashMap<MapData, u32, MaglevTable>,
    pub workloads: HashMap<MapData, u32, Workload>,
    pub proxy_config: Array<MapData, ProxyConfig>,
    pub orig_dst: HashMap<MapData, ClientKey, OrigDst>,
    pub service_stats: PerCpuArray<MapData, ServiceStats>,
    pub backend_stats: PerCpuArray<MapData, u64>,
    /// IPv6 VIPs (`proxy_common::maps6`).
    pub services6: HashMap<MapData, ServiceKey6, ServiceValue>,
    pub backends6: HashMap<MapData, BackendKey, Backend6>,
    pub workloads6: HashMap<MapData, [u32; 4], Workload>,
}

impl Maps {
    /// Takes the maps out of `ebpf` (programs keep their references).
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        Ok(Self {
            services: take(ebpf, proxy_common::SERVICES)?.try_into()?,
            backends: take(ebpf, proxy_common::BACKENDS)?.try_into()?,
            maglev: take(ebpf, proxy_common::MAGLEV)?.try_into()?,
            workloads: take(ebpf, proxy_common::WORKLOADS)?.try_into()?,
            proxy_config: take(ebpf, proxy_common::PROXY_CONFIG)?.try_into()?,
            orig_dst: take(ebpf, proxy_common::ORIG_DST)?.try_into()?,
            service_stats: take(ebpf, proxy_common::SERVICE_STATS)?.try_into()?,
            backend_stats: take(ebpf, proxy_common::BACKEND_STATS)?.try_into()?,
            services6: take(ebpf, proxy_common::SERVICES6)?.try_into()?,
            backends6: take(ebpf, proxy_common::BACKENDS6)?.try_into()?,
            workloads6: take(ebpf, proxy_common::WORKLOADS6)?.try_into()?,
        })
    }
}

fn take(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}

/// Map type, key size, value size and capacity of each pinned map, as this
/// build's eBPF object declares them.
fn expected_layout(name: &str) -> Option<(MapType, usize, usize, u32)> {
    use core::mem::size_of;
    use proxy_common as c;
    use MapType::{Array as A, Hash as H, LruHash as Lru, PerCpuArray as PcA};
    Some(match name {
        c::SERVICES => (
            H,
            size_of::<ServiceKey>(),
            size_of::<ServiceValue>(),
            c::MAX_SERVICES,
        ),
        c::BACKENDS => (
            H,
            size_of::<BackendKey>(),
            size_of::<Backend>(),
            c::MAX_BACKENDS,
        ),
        c::MAGLEV => (H, 4, size_of::<MaglevTable>(), c::MAX_MAGLEV_SERVICES),
        c::WORKLOADS => (H, 4, size_of::<Workload>(), c::MAX_WORKLOADS),
        c::PROXY_CONFIG => (A, 4, size_of::<ProxyConfig>(), 1),
        c::ORIG_DST => (
            Lru,
            size_of::<ClientKey>(),
            size_of::<OrigDst>(),
            c::MAX_CONNECTIONS,
        ),
        c::SOCK_NAT => (A, 4, size_of::<SockNat>(), c::SOCK_NAT_SLOTS),
        c::REV_NAT => (
            Lru,
            size_of::<proxy_common::RevNatKey>(),
            size_of::<OrigDst>(),
            c::MAX_CONNECTIONS,
        ),
        c::SERVICE_STATS => (PcA, 4, size_of::<ServiceStats>(), c::MAX_SERVICES),
        c::BACKEND_STATS => (PcA, 4, 8, c::MAX_BACKEND_STATS),
        c::TCP_STATS => (
            MapType::PerCpuHash,
            size_of::<proxy_common::TcpStatsKey>(),
            size_of::<proxy_common::TcpStats>(),
            c::MAX_TCP_STATS,
        ),
        c::SERVICES6 => (
            H,
            size_of::<ServiceKey6>(),
            size_of::<ServiceValue>(),
            c::MAX_SERVICES,
        ),
        c::BACKENDS6 => (
            H,
            size_of::<BackendKey>(),
            size_of::<Backend6>(),
            c::MAX_BACKENDS,
        ),
        c::SOCK_NAT6 => (
            A,
            4,
            size_of::<proxy_common::SockNat6>(),
            c::SOCK_NAT6_SLOTS,
        ),
        c::REV_NAT6 => (
            Lru,
            size_of::<proxy_common::RevNatKey6>(),
            size_of::<proxy_common::OrigDst6>(),
            c::MAX_CONNECTIONS,
        ),
        c::WORKLOADS6 => (H, 16, size_of::<Workload>(), c::MAX_WORKLOADS),
        _ => return None,
    })
}

/// Refuses to reuse pins left by a build whose map layout differs (an
/// upgrade that changed a key or value): the programs of this build would
/// misread them.
///
/// Errors: name the map, both layouts, and the way out (remove the pins
/// with `strait run --cleanup`, which detaches the data path).
pub fn check_pinned(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    for name in proxy_common::PINNED_MAPS
        .iter()
        .chain(&proxy_common::PINNED_MAPS6)
        .copied()
    {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = aya::maps::MapInfo::from_pin(&path)
            .with_context(|| format!("reading pinned map {}", path.display()))?;
        let have = (
            info.map_type()
                .with_context(|| format!("reading pinned map {}", path.display()))?,
            info.key_size() as usize,
            info.value_size() as usize,
            info.max_entries(),
        );
        let want = expected_layout(name).expect("every pinned map has a layout");
        if have != want {
            anyhow::bail!(
                "pinned map {} has (type, key, value, entries) = {have:?} but this strait expects {want:?}: \
                 remove the old data path with `strait run --cleanup` (or delete {})",
                path.display(),
                pin_dir.display()
            );
        }
    }
    Ok(())
}
