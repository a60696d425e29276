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
//!
//! A real of an IPv4 VIP may be an IPv6 node (4in6, Katran's reals keyed
//! by their own family): its `XLB_REALS` entry is flagged
//! [`XLB_REAL_IPV6`] and its address is the same index of
//! [`proxy_common::XLB_REALS_4IN6`]; the ring names it by its address text
//! like any real.
use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context;
use aya::{
    maps::{Array, PerCpuArray},
    programs::Xdp,
    Ebpf,
};
use proxy_common::{
    ipv4_to_be, port_to_be, proto, XlbConfig, XlbConfig6, XlbReal, XlbReal6, XlbStats, XlbVipKey,
    MAX_XLB_REALS, MAX_XLB_VIPS, XLB_REAL_IPV6,
};
use strait_config::snapshot::L4Protocol;

use super::xlb_book::{family_entries, wanted, Reals};
use super::xlb_table::V4;
use super::xlb_vips::{map_mut, map_ref, VipBook};

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
    /// VIP are dropped and counted (`no_real_dropped`), as Katran does. An
    /// IPv4 node is reached over IPIP, an IPv6 node over 4in6 (outer IPv6
    /// source and gateway MAC from [`super::configure_uplink6`]: without
    /// them its flows are dropped and counted as `no_real_dropped`).
    pub reals: Vec<(IpAddr, u32)>,
}

/// The XDP balancer's IPv4 entries of a snapshot's external services
/// ([`strait_config::snapshot::ExternalL4Service`]): IPv4 VIPs with their
/// nodes' addresses as compiled (IPv4, else IPv6: 4in6). IPv6 VIPs are
/// left to [`super::external_vips6`]; an IPv4 VIP's endpoints without a
/// node address are named in the second list.
pub fn external_vips(
    services: &[strait_config::snapshot::ExternalL4Service],
) -> (Vec<ExternalVip>, Vec<String>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let v4 = |a| match a {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    };
    for (s, vip, reals, unplaced) in family_entries(services, v4, Some) {
        if unplaced > 0 {
            skipped.push(format!(
                "Service {} external VIP {vip}:{}: {unplaced} endpoint(s) left out of the XDP ring: \
                 their Pods' status.hostIP/hostIPs list no node address",
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

/// Removes the IPv6 reals (4in6) from `vips`, for a node whose uplink
/// has no IPv6 source (see [`ipv6_uplink`]): their flows would only be
/// dropped, while the VIP's IPv4 reals can serve them. Returns a warning
/// per VIP that lost reals (the VIP without any real left drops its
/// packets, counted as `no_real_dropped`).
pub fn without_ipv6_reals(vips: &mut [ExternalVip]) -> Vec<String> {
    let mut warnings = Vec::new();
    for v in vips {
        let before = v.reals.len();
        v.reals.retain(|(a, _)| a.is_ipv4());
        if v.reals.len() < before {
            warnings.push(format!(
                "external VIP {}:{}/{:?}: {} IPv6-only node(s) left out of the XDP ring: the uplink \
                 has no IPv6 address for 4in6 (set --xdp-source6)",
                v.vip,
                v.port,
                v.protocol,
                before - v.reals.len()
            ));
        }
    }
    warnings
}

/// Whether the uplink program has an IPv6 outer source (`XLB_CONFIG6`),
/// which 4in6 needs besides ip6ip6.
///
/// Errors: the map is missing or cannot be read.
pub fn ipv6_uplink(ebpf: &Ebpf) -> anyhow::Result<bool> {
    let a: Array<_, XlbConfig6> = Array::try_from(
        ebpf.map(proxy_common::XLB_CONFIG6)
            .context("map XLB_CONFIG6 missing from the eBPF object")?,
    )?;
    Ok(a.get(&0, 0)?.src_ip != [0; 16])
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
    book: VipBook<V4, IpAddr>,
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

/// Sets the outer source address and gateway MAC (the uplink MTU set by
/// [`set_uplink_mtu`] is kept); until this is called the balancer passes
/// every packet.
pub fn configure_uplink(ebpf: &mut Ebpf, cfg: &UplinkConfig) -> anyhow::Result<()> {
    let mut a: Array<_, XlbConfig> = Array::try_from(map_mut(ebpf, proxy_common::XLB_CONFIG)?)?;
    let mtu = a.get(&0, 0).map_or(0, |c| c.mtu);
    a.set(
        0,
        XlbConfig {
            src_ip: ipv4_to_be(u32::from(cfg.source)),
            gw_mac: cfg.gateway_mac,
            mtu,
        },
        0,
    )?;
    Ok(())
}

/// Sets the uplink's MTU (bytes of the largest IP packet it sends, as
/// `ip link` shows it; 0: unknown, nothing checked) in `XLB_CONFIG` and
/// `XLB_CONFIG6`: a VIP packet that no longer fits once tunnelled (20
/// bytes of IPIP, 40 of 4in6 or ip6ip6) is answered with ICMP
/// "fragmentation needed" (IPv4 with DF) or "Packet Too Big" (IPv6)
/// announcing the MTU minus that overhead, as Katran's
/// `ICMP_TOOBIG_GENERATION`, else dropped; counted as `too_big_dropped`.
///
/// Errors: a map is missing or refuses the update.
pub fn set_uplink_mtu(ebpf: &mut Ebpf, mtu: u16) -> anyhow::Result<()> {
    let [c4, c6] = ebpf
        .maps_disjoint_mut([proxy_common::XLB_CONFIG, proxy_common::XLB_CONFIG6])
        .map(|m| m.context("map XLB_CONFIG or XLB_CONFIG6 missing from the eBPF object"));
    let mut c4: Array<_, XlbConfig> = Array::try_from(c4?)?;
    let mut c6: Array<_, proxy_common::XlbConfig6> = Array::try_from(c6?)?;
    super::uplink_mtu::write_mtu(&mut c4, &mut c6, mtu)
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

/// The `XLB_REALS` entry of real `a`.
fn real_entry(a: IpAddr) -> XlbReal {
    match a {
        IpAddr::V4(a) => XlbReal {
            ip: ipv4_to_be(u32::from(a)),
            flags: 0,
        },
        IpAddr::V6(_) => XlbReal {
            ip: 0,
            flags: XLB_REAL_IPV6,
        },
    }
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
        let map = |name: &str| map_ref(ebpf, name);
        let reals: Array<_, XlbReal> = Array::try_from(map(proxy_common::XLB_REALS)?)?;
        let reals6: Array<_, XlbReal6> = Array::try_from(map(proxy_common::XLB_REALS_4IN6)?)?;
        let reals = Reals::recover(reals.iter().zip(reals6.iter()).map(|(r, r6)| {
            let r = r.context("reading XLB_REALS")?;
            if r.flags & XLB_REAL_IPV6 != 0 {
                let r6 = r6.context("reading XLB_REALS4IN6")?;
                return Ok((r6.ip != [0; 16]).then(|| IpAddr::from(r6.ip)));
            }
            Ok((r.ip != 0).then(|| Ipv4Addr::from(u32::from_be(r.ip)).into()))
        }))?;
        Ok(Self {
            book: VipBook::recover(ebpf, reals)?,
        })
    }

    /// Copies the VIPs of the hash map earlier builds pinned as
    /// [`proxy_common::XLB_VIPS_V1`] under `pin_dir` (if any) into the VIP
    /// table, so this build's program balances them from its first packet,
    /// then unpins that map (a program still attached keeps it until it is
    /// replaced). A VIP on ring 0 gets a new ring id (0 is never used now;
    /// the ring is rebuilt at the next [`ExternalVips::apply`] anyway).
    /// Returns how many entries were copied.
    ///
    /// Errors: the old map cannot be read or the table written; the old pin
    /// is then left in place.
    pub fn adopt_v1(
        &mut self,
        ebpf: &mut Ebpf,
        pin_dir: &std::path::Path,
    ) -> anyhow::Result<usize> {
        self.book
            .adopt_v1(ebpf, &pin_dir.join(proxy_common::XLB_VIPS_V1))
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
        let want = wanted(
            vips,
            |v| (vip_key(v), &v.reals[..]),
            |k| k.vip,
            MAX_XLB_VIPS,
            "",
            |v| {
                format!(
                    "external VIP {}:{}/{:?} is listed twice",
                    v.vip, v.port, v.protocol
                )
            },
        )?;
        // Reals first, so rings never name an index without an address;
        // an IPv6 real's address before its flagged entry.
        {
            let mut new = Vec::new();
            self.book
                .reals
                .add(&want.listed, MAX_XLB_REALS, "reals", |i, a| {
                    new.push((i, a));
                    Ok(())
                })?;
            if new.iter().any(|(_, a)| a.is_ipv6()) {
                let mut reals6: Array<_, XlbReal6> =
                    Array::try_from(map_mut(ebpf, proxy_common::XLB_REALS_4IN6)?)?;
                for (i, a) in &new {
                    if let IpAddr::V6(a) = a {
                        reals6.set(*i, XlbReal6 { ip: a.octets() }, 0)?;
                    }
                }
            }
            let mut reals: Array<_, XlbReal> =
                Array::try_from(map_mut(ebpf, proxy_common::XLB_REALS)?)?;
            for (i, a) in new {
                reals.set(i, real_entry(a), 0)?;
            }
        }
        self.book
            .write_vips::<XlbReal>(ebpf, want, proxy_common::XLB_REALS)
    }
}
