//! Typed handles on the pinned maps, taken out of the loaded object so the
//! loader can write several at once.
use anyhow::Context;
use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    Ebpf,
};
use proxy_common::{
    Backend, Backend6, BackendKey, ClientKey, ClientKey6, MaglevTable, OrigDst, OrigDst6,
    ProxyConfig, ProxyConfig6, ServiceKey, ServiceKey6, ServiceStats, ServiceValue, Workload,
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
    /// The node proxy's IPv6 outbound listener (port 0: none).
    pub proxy_config6: Array<MapData, ProxyConfig6>,
    pub orig_dst6: HashMap<MapData, ClientKey6, OrigDst6>,
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
            proxy_config6: take(ebpf, proxy_common::PROXY_CONFIG6)?.try_into()?,
            orig_dst6: take(ebpf, proxy_common::ORIG_DST6)?.try_into()?,
        })
    }
}

fn take(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}
