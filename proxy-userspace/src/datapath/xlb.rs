//! The XDP load balancer for external VIPs from userspace (Katran's
//! design, see [`proxy_common::xlb`]): writes the VIP, ring and real tables
//! of an object from [`super::load`] or a [`super::Datapath`], and reads its
//! counters.
//!
//! A VIP's ring is the one Maglev table builder ([`proxy_common::maglev`])
//! over its healthy reals (weight > 0) in address order, keyed by the
//! real's address text, so every balancer node builds the same ring. A real
//! keeps its index while any VIP lists it (a drained real, weight 0, keeps
//! its established flows); once no VIP lists it, its entry is cleared and
//! flows pinned to it are hashed again onto the current ring.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use anyhow::{bail, Context};
use aya::{
    maps::{Array, HashMap as BpfHashMap, PerCpuArray},
    programs::Xdp,
    Ebpf,
};
use proxy_common::{
    ipv4_to_be, port_to_be, proto, MaglevTable, XlbConfig, XlbReal, XlbStats, XlbVip, XlbVipKey,
    MAGLEV_TABLE_SIZE, MAX_XLB_REALS, MAX_XLB_VIPS, XLB_ADDRESS_ONLY,
};
use strait_config::snapshot::L4Protocol;

/// One external VIP (a Service's `externalIPs` entry or
/// `status.loadBalancer.ingress` address) on one port: where its packets go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalVip {
    /// The VIP.
    pub vip: Ipv4Addr,
    /// Service port.
    pub port: u16,
    /// Transport protocol.
    pub protocol: L4Protocol,
    /// Nodes hosting the service's endpoints, with weights (e.g. the number
    /// of ready endpoints on the node); weight 0 drains a node: no new
    /// flows, established ones stay. No real with weight > 0: packets to the
    /// VIP are dropped and counted (`no_real_dropped`), as Katran does.
    pub reals: Vec<(Ipv4Addr, u32)>,
}

/// The XDP balancer's IPv4 entries of a snapshot's external services
/// ([`strait_config::snapshot::ExternalL4Service`]): IPv4 VIPs with IPv4
/// node addresses (IPv4-in-IPv4). IPv6 VIPs are left to
/// [`super::external_vips6`]; an IPv4 VIP's endpoints without an IPv4 node
/// address are named in the second list.
pub fn external_vips(
    services: &[strait_config::snapshot::ExternalL4Service],
) -> (Vec<ExternalVip>, Vec<String>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for s in services {
        let std::net::IpAddr::V4(vip) = s.vip else {
            continue;
        };
        let reals: Vec<(Ipv4Addr, u32)> = s
            .nodes
            .iter()
            .filter_map(|(a, w)| match a {
                std::net::IpAddr::V4(a) => Some((*a, *w)),
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        let unplaced = s.unplaced as usize + s.nodes.len() - reals.len();
        if unplaced > 0 {
            skipped.push(format!(
                "Service {} external VIP {vip}:{}: {unplaced} endpoint(s) left out of the XDP ring: \
                 their Pods' status.hostIP/hostIPs list no IPv4 node address",
                s.host, s.port
            ));
        }
        out.push(ExternalVip {
            vip,
            port: s.port,
            protocol: s.protocol,
            reals,
        });
    }
    (out, skipped)
}

/// How tunnelled packets leave the uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UplinkConfig {
    /// Outer source address of the IPIP header: this node's uplink address.
    pub source: Ipv4Addr,
    /// Destination MAC of tunnelled frames: the uplink's gateway (the
    /// router that routes node addresses), as Katran's `default_mac`.
    pub gateway_mac: [u8; 6],
}

/// What [`ExternalVips::apply`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XlbReport {
    /// VIP:port/protocol entries in the kernel.
    pub vips: usize,
    /// Of them, without a healthy real (their packets are dropped).
    pub without_reals: usize,
    /// Reals (nodes) with an index.
    pub reals: usize,
}

/// The XDP balancer's tables, as last written.
#[derive(Default)]
pub struct ExternalVips {
    reals: HashMap<Ipv4Addr, u32>,
    free_reals: Vec<u32>,
    next_real: u32,
    rings: HashMap<XlbVipKey, u32>,
    next_ring: u32,
    free_rings: Vec<u32>,
    markers: HashSet<u32>,
    /// Healthy reals each ring was last built from: an unchanged VIP's
    /// ring is not rebuilt (a reload costs only the VIPs it changes).
    built: HashMap<XlbVipKey, Vec<(Ipv4Addr, u32)>>,
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}

/// Loads the uplink program (`xdp_lb`: deny tries, then the external VIP
/// balancer) of an object from [`super::load`], not attached.
pub fn load_xdp_lb(ebpf: &mut Ebpf) -> anyhow::Result<&mut Xdp> {
    load_xdp(ebpf, super::programs::XDP_LB)
}

/// Loads the `xdp_drop` program (drops everything: the floor of
/// `cargo xtask bench xdp`).
pub fn load_xdp_drop(ebpf: &mut Ebpf) -> anyhow::Result<&mut Xdp> {
    load_xdp(ebpf, super::programs::XDP_DROP)
}

pub(crate) fn load_xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("{name} program missing from the eBPF object"))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("loading {name} (the verifier log is below)"))?;
    Ok(prog)
}

/// Sets the outer source address and gateway MAC; until this is called the
/// balancer passes every packet.
pub fn configure_uplink(ebpf: &mut Ebpf, cfg: &UplinkConfig) -> anyhow::Result<()> {
    let mut a: Array<_, XlbConfig> = Array::try_from(map_mut(ebpf, proxy_common::XLB_CONFIG)?)?;
    a.set(
        0,
        XlbConfig {
            src_ip: ipv4_to_be(u32::from(cfg.source)),
            gw_mac: cfg.gateway_mac,
            pad: 0,
        },
        0,
    )?;
    Ok(())
}

/// The balancer's counters summed over CPUs.
pub fn xlb_stats(ebpf: &Ebpf) -> anyhow::Result<XlbStats> {
    let a: PerCpuArray<_, XlbStats> = PerCpuArray::try_from(
        ebpf.map(proxy_common::XLB_STATS)
            .context("map XLB_STATS missing from the eBPF object")?,
    )?;
    let mut sum = XlbStats::default();
    for v in a.get(&0, 0)?.iter() {
        sum.packets += v.packets;
        sum.bytes += v.bytes;
        sum.new_flows += v.new_flows;
        sum.icmp_frag_needed += v.icmp_frag_needed;
        sum.fragments_dropped += v.fragments_dropped;
        sum.malformed_dropped += v.malformed_dropped;
        sum.no_real_dropped += v.no_real_dropped;
        sum.too_big_dropped += v.too_big_dropped;
        sum.decapsulated += v.decapsulated;
    }
    Ok(sum)
}

fn vip_key(v: &ExternalVip) -> XlbVipKey {
    XlbVipKey {
        vip: ipv4_to_be(u32::from(v.vip)),
        port: port_to_be(v.port),
        proto: match v.protocol {
            L4Protocol::Tcp => proto::TCP,
            L4Protocol::Udp => proto::UDP,
        },
        pad: 0,
    }
}

impl ExternalVips {
    /// Empty tables (a fresh object).
    pub fn new() -> Self {
        Self::default()
    }

    /// The bookkeeping of tables an earlier run left in pinned maps: the
    /// reals keep their indexes (so flows in the connection table stay on
    /// their node) and the VIPs their rings; each ring is rebuilt at the
    /// next [`ExternalVips::apply`] (Maglev is deterministic: the same
    /// reals and weights give the same ring). Empty maps give empty tables.
    ///
    /// Errors: a map cannot be read.
    pub fn recover(ebpf: &Ebpf) -> anyhow::Result<Self> {
        let map = |name: &str| {
            ebpf.map(name)
                .with_context(|| format!("map {name} missing from the eBPF object"))
        };
        let mut out = Self::new();
        let reals: Array<_, XlbReal> = Array::try_from(map(proxy_common::XLB_REALS)?)?;
        let mut used = Vec::new();
        for (i, r) in reals.iter().enumerate() {
            let r = r.context("reading XLB_REALS")?;
            if r.ip != 0 {
                out.reals
                    .insert(Ipv4Addr::from(u32::from_be(r.ip)), i as u32);
                used.push(i as u32);
            }
        }
        out.next_real = used.iter().max().map_or(0, |m| m + 1);
        out.free_reals = (0..out.next_real).filter(|i| !used.contains(i)).collect();
        let vips: BpfHashMap<_, XlbVipKey, XlbVip> =
            BpfHashMap::try_from(map(proxy_common::XLB_VIPS)?)?;
        for item in vips.iter() {
            let (k, v) = item.context("reading XLB_VIPS")?;
            if v.ring == XLB_ADDRESS_ONLY {
                out.markers.insert(k.vip);
            } else {
                out.rings.insert(k, v.ring);
            }
        }
        let rings: BpfHashMap<_, u32, MaglevTable> =
            BpfHashMap::try_from(map(proxy_common::XLB_RINGS)?)?;
        let referenced: HashSet<u32> = out.rings.values().copied().collect();
        let stored: Vec<u32> = rings
            .keys()
            .collect::<Result<_, _>>()
            .context("reading XLB_RINGS")?;
        out.next_ring = referenced
            .iter()
            .chain(stored.iter())
            .max()
            .map_or(0, |m| m + 1);
        // Ids no VIP uses are free (a ring left without its VIP is removed
        // at the next apply).
        out.free_rings = (0..out.next_ring)
            .filter(|r| !referenced.contains(r))
            .collect();
        Ok(out)
    }

    /// Makes the kernel tables hold exactly `vips`: reals indexed, each
    /// VIP's ring rebuilt and swapped in with one map update (a flow whose
    /// real stays keeps it through the connection table), gone VIPs and
    /// reals removed.
    ///
    /// Errors: the same VIP:port/protocol twice, more than
    /// [`MAX_XLB_VIPS`] entries or [`MAX_XLB_REALS`] reals, a map update
    /// refused. The tables then hold what was written before the error.
    pub fn apply(&mut self, ebpf: &mut Ebpf, vips: &[ExternalVip]) -> anyhow::Result<XlbReport> {
        let mut want: BTreeMap<XlbVipKey, &ExternalVip> = BTreeMap::new();
        for v in vips {
            if want.insert(vip_key(v), v).is_some() {
                bail!(
                    "external VIP {}:{}/{:?} is listed twice",
                    v.vip,
                    v.port,
                    v.protocol
                );
            }
        }
        let addrs: HashSet<u32> = want.keys().map(|k| k.vip).collect();
        if want.len() + addrs.len() > MAX_XLB_VIPS as usize {
            bail!(
                "{} external VIP ports on {} addresses exceed the XDP balancer's {MAX_XLB_VIPS} entries",
                want.len(),
                addrs.len()
            );
        }
        // Reals first, so rings never name an index without an address.
        let listed: HashSet<Ipv4Addr> = want
            .values()
            .flat_map(|v| v.reals.iter().map(|(a, _)| *a))
            .collect();
        {
            let mut reals: Array<_, XlbReal> =
                Array::try_from(map_mut(ebpf, proxy_common::XLB_REALS)?)?;
            let mut new: Vec<Ipv4Addr> = listed
                .iter()
                .filter(|a| !self.reals.contains_key(a))
                .copied()
                .collect();
            new.sort();
            for a in new {
                // Fresh indexes before reused ones: a flow still pinned to a
                // freed index must not land on an unrelated node.
                let i = if self.next_real < MAX_XLB_REALS {
                    self.next_real += 1;
                    self.next_real - 1
                } else if let Some(i) = self.free_reals.pop() {
                    i
                } else {
                    bail!("more than {MAX_XLB_REALS} XDP balancer reals");
                };
                reals.set(
                    i,
                    XlbReal {
                        ip: ipv4_to_be(u32::from(a)),
                        flags: 0,
                    },
                    0,
                )?;
                self.reals.insert(a, i);
            }
        }
        let mut report = XlbReport::default();
        {
            let mut rings: BpfHashMap<_, u32, MaglevTable> =
                BpfHashMap::try_from(map_mut(ebpf, proxy_common::XLB_RINGS)?)?;
            let mut table = Box::new(MaglevTable {
                slots: [0; MAGLEV_TABLE_SIZE as usize],
            });
            for (key, v) in &want {
                let ring = match self.rings.get(key) {
                    Some(r) => *r,
                    None => {
                        let r = self.free_rings.pop().unwrap_or_else(|| {
                            self.next_ring += 1;
                            self.next_ring - 1
                        });
                        self.rings.insert(*key, r);
                        r
                    }
                };
                let mut healthy: Vec<(Ipv4Addr, u32)> =
                    v.reals.iter().filter(|(_, w)| *w > 0).copied().collect();
                healthy.sort();
                healthy.dedup_by_key(|(a, _)| *a);
                if healthy.is_empty() {
                    let _ = rings.remove(&ring);
                    self.built.remove(key);
                    report.without_reals += 1;
                    continue;
                }
                if self.built.get(key) == Some(&healthy) {
                    continue;
                }
                let perms: Vec<(u64, u64)> = healthy
                    .iter()
                    .map(|(a, _)| {
                        proxy_common::maglev::permutation(
                            a.to_string().as_bytes(),
                            MAGLEV_TABLE_SIZE,
                        )
                    })
                    .collect();
                let mut next = vec![0u64; healthy.len()];
                proxy_common::maglev::populate(
                    &perms,
                    |i| healthy[i].1,
                    &mut next,
                    &mut table.slots,
                );
                for s in table.slots.iter_mut() {
                    *s = self.reals[&healthy[*s as usize].0];
                }
                rings
                    .insert(ring, table.as_ref(), 0)
                    .context("XLB_RINGS is full")?;
                self.built.insert(*key, healthy);
            }
        }
        {
            let mut map: BpfHashMap<_, XlbVipKey, XlbVip> =
                BpfHashMap::try_from(map_mut(ebpf, proxy_common::XLB_VIPS)?)?;
            for key in want.keys() {
                let ring = self.rings[key];
                map.insert(key, XlbVip { ring, flags: 0 }, 0)
                    .context("XLB_VIPS is full")?;
            }
            for a in &addrs {
                let marker = XlbVipKey {
                    vip: *a,
                    port: 0,
                    proto: 0,
                    pad: 0,
                };
                map.insert(
                    marker,
                    XlbVip {
                        ring: XLB_ADDRESS_ONLY,
                        flags: 0,
                    },
                    0,
                )
                .context("XLB_VIPS is full")?;
            }
            let gone: Vec<XlbVipKey> = self
                .rings
                .keys()
                .filter(|k| !want.contains_key(k))
                .copied()
                .collect();
            for k in gone {
                let _ = map.remove(&k);
                self.built.remove(&k);
                if let Some(r) = self.rings.remove(&k) {
                    self.free_rings.push(r);
                }
            }
            for a in self.markers.difference(&addrs) {
                let _ = map.remove(&XlbVipKey {
                    vip: *a,
                    port: 0,
                    proto: 0,
                    pad: 0,
                });
            }
            self.markers = addrs;
        }
        {
            // Rings of removed VIPs, then reals no VIP lists any more.
            let mut rings: BpfHashMap<_, u32, MaglevTable> =
                BpfHashMap::try_from(map_mut(ebpf, proxy_common::XLB_RINGS)?)?;
            for r in &self.free_rings {
                let _ = rings.remove(r);
            }
            let mut reals: Array<_, XlbReal> =
                Array::try_from(map_mut(ebpf, proxy_common::XLB_REALS)?)?;
            let gone: Vec<Ipv4Addr> = self
                .reals
                .keys()
                .filter(|a| !listed.contains(a))
                .copied()
                .collect();
            for a in gone {
                if let Some(i) = self.reals.remove(&a) {
                    reals.set(i, XlbReal::default(), 0)?;
                    self.free_reals.push(i);
                }
            }
        }
        report.vips = want.len();
        report.reals = self.reals.len();
        Ok(report)
    }
}
