//! The XDP load balancer's IPv6 side from userspace (see
//! [`proxy_common::xlb6`]): writes the IPv6 VIP, ring and real tables and
//! the ip6ip6 outer source, as [`super::xlb`] does for IPv4.
//!
//! An IPv6 VIP is spread over the IPv6 addresses of the nodes hosting its
//! endpoints (the Pods' `status.hostIPs`, see
//! [`strait_config::snapshot::ExternalL4Service::nodes`]); packets are
//! tunnelled ip6ip6, so the underlay between balancer and nodes must route
//! IPv6 (Katran does not tunnel an IPv6 VIP over IPv4 either). Rings are
//! built by the one Maglev builder keyed by the node address text, so
//! every balancer builds the same ring; a real keeps its index while any
//! VIP lists it.
use std::net::Ipv6Addr;

use anyhow::Context;
use aya::{
    maps::{Array, HashMap as BpfHashMap},
    Ebpf,
};
use proxy_common::{
    flow_hash6, port_to_be, proto, vip_buckets6, XlbConfig6, XlbConn, XlbConn6, XlbFlow6, XlbReal6,
    XlbVip, XlbVipBucket6, XlbVipKey6, XlbVipSlot6, MAX_XLB_REALS6, MAX_XLB_VIPS6,
    XLB_VIP6_BUCKETS, XLB_VIP6_BUCKET_SLOTS,
};
use strait_config::snapshot::L4Protocol;

use super::xlb_book::{family_entries, wanted, Reals};
use super::xlb_table::VipFamily;
use super::xlb_vips::{map_mut, map_ref, VipBook};

/// IPv6's VIP table, [`proxy_common::XLB_VIPS6`].
pub(super) struct V6;

impl VipFamily for V6 {
    type Key = XlbVipKey6;
    type Addr = [u8; 16];
    type Bucket = XlbVipBucket6;
    const MAP: &'static str = proxy_common::XLB_VIPS6;
    const RINGS: &'static str = proxy_common::XLB_RINGS6;
    const BUCKETS: u32 = XLB_VIP6_BUCKETS;
    const SLOTS: usize = XLB_VIP6_BUCKET_SLOTS;
    fn with_pad(key: XlbVipKey6, pad: u8) -> XlbVipKey6 {
        XlbVipKey6 { pad, ..key }
    }
    fn pad(key: &XlbVipKey6) -> u8 {
        key.pad
    }
    fn buckets(key: &XlbVipKey6) -> [u32; 2] {
        vip_buckets6(key.words())
    }
    fn slot(bucket: &XlbVipBucket6, s: usize) -> (XlbVipKey6, XlbVip) {
        (bucket.slots[s].key, bucket.slots[s].vip)
    }
    fn set_slot(bucket: &mut XlbVipBucket6, s: usize, key: XlbVipKey6, vip: XlbVip) {
        bucket.slots[s] = XlbVipSlot6 { key, vip, pad: 0 };
    }
    fn describe(key: &XlbVipKey6) -> String {
        let proto = match key.proto {
            proto::TCP => "TCP".to_string(),
            proto::UDP => "UDP".to_string(),
            0 => "address".to_string(),
            n => format!("protocol {n}"),
        };
        format!(
            "[{}]:{}/{proto}",
            Ipv6Addr::from(key.vip),
            u16::from_be(key.port)
        )
    }
    fn addr(key: &XlbVipKey6) -> [u8; 16] {
        key.vip
    }
    fn marker(vip: [u8; 16]) -> XlbVipKey6 {
        XlbVipKey6 {
            vip,
            port: 0,
            proto: 0,
            pad: 0,
        }
    }
}

/// One external IPv6 VIP on one port: where its packets go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalVip6 {
    /// The VIP.
    pub vip: Ipv6Addr,
    /// Service port.
    pub port: u16,
    /// Transport protocol.
    pub protocol: L4Protocol,
    /// Nodes (IPv6 addresses) hosting the service's endpoints, with
    /// weights; weight 0 drains a node (no new flows, established ones
    /// stay). No real with weight > 0: packets are dropped and counted
    /// (`no_real_dropped`).
    pub reals: Vec<(Ipv6Addr, u32)>,
}

/// The IPv6 entries of a snapshot's external services for the XDP
/// balancer, and a warning per entry that loses endpoints (named by
/// Service host, VIP, port and the Pod field at fault).
pub fn external_vips6(
    services: &[strait_config::snapshot::ExternalL4Service],
) -> (Vec<ExternalVip6>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let v6 = |a| match a {
        std::net::IpAddr::V6(a) => Some(a),
        std::net::IpAddr::V4(_) => None,
    };
    for (s, vip, reals, unplaced) in family_entries(services, v6, v6) {
        if unplaced > 0 {
            warnings.push(format!(
                "Service {} external VIP [{vip}]:{}: {unplaced} endpoint(s) left out of the XDP ring: \
                 their Pods' status.hostIPs list no IPv6 node address",
                s.host, s.port
            ));
        }
        out.push(ExternalVip6 {
            vip,
            port: s.port,
            protocol: s.protocol,
            reals,
        });
    }
    (out, warnings)
}

/// How ip6ip6-tunnelled packets leave the uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UplinkConfig6 {
    /// Outer source address: this node's uplink IPv6 address.
    pub source: Ipv6Addr,
    /// Destination MAC of tunnelled frames: the uplink's IPv6 gateway.
    pub gateway_mac: [u8; 6],
}

/// Sets the ip6ip6 outer source and gateway MAC; until this is called (or
/// with `None`) IPv6 packets to VIPs pass (decapsulation still works).
pub fn configure_uplink6(ebpf: &mut Ebpf, cfg: Option<&UplinkConfig6>) -> anyhow::Result<()> {
    let mut a: Array<_, XlbConfig6> = Array::try_from(
        ebpf.map_mut(proxy_common::XLB_CONFIG6)
            .context("map XLB_CONFIG6 missing from the eBPF object")?,
    )?;
    // The uplink MTU (`super::xlb::set_uplink_mtu`) is kept.
    let mtu = a.get(&0, 0).map_or(0, |c| c.mtu);
    let value = cfg.map_or(
        XlbConfig6 {
            mtu,
            ..XlbConfig6::default()
        },
        |c| XlbConfig6 {
            src_ip: c.source.octets(),
            gw_mac: c.gateway_mac,
            mtu,
        },
    );
    a.set(0, value, 0)?;
    Ok(())
}

fn vip_key(v: &ExternalVip6) -> XlbVipKey6 {
    XlbVipKey6 {
        vip: v.vip.octets(),
        port: port_to_be(v.port),
        proto: match v.protocol {
            L4Protocol::Tcp => proto::TCP,
            L4Protocol::Udp => proto::UDP,
        },
        pad: 0,
    }
}

/// The IPv6 balancer's tables, as last written.
#[derive(Default)]
pub struct ExternalVips6 {
    book: VipBook<V6, Ipv6Addr>,
}

impl ExternalVips6 {
    /// Empty tables (a fresh object).
    pub fn new() -> Self {
        Self::default()
    }

    /// The bookkeeping of tables an earlier run left in pinned maps (see
    /// [`super::ExternalVips::recover`]).
    ///
    /// Errors: a map cannot be read.
    pub fn recover(ebpf: &Ebpf) -> anyhow::Result<Self> {
        let map = |name: &str| map_ref(ebpf, name);
        let reals: Array<_, XlbReal6> = Array::try_from(map(proxy_common::XLB_REALS6)?)?;
        let reals = Reals::recover(reals.iter().map(|r| {
            let r = r.context("reading XLB_REALS6")?;
            Ok((r.ip != [0; 16]).then(|| Ipv6Addr::from(r.ip)))
        }))?;
        Ok(Self {
            book: VipBook::recover(ebpf, reals)?,
        })
    }

    /// Copies the IPv6 VIPs of the hash map earlier builds pinned as
    /// [`proxy_common::XLB_VIPS6_V1`] under `pin_dir` (if any) into the VIP
    /// table, so this build's program balances them from its first packet,
    /// then unpins that map (a program still attached keeps it until it is
    /// replaced), as [`super::ExternalVips::adopt_v1`] does for IPv4. A VIP
    /// on ring 0 (those builds' first id) gets a new ring id with a copy of
    /// its ring. Returns how many entries were copied.
    ///
    /// Errors: the old map cannot be read or the table written; the old pin
    /// is then left in place.
    pub fn adopt_v1(
        &mut self,
        ebpf: &mut Ebpf,
        pin_dir: &std::path::Path,
    ) -> anyhow::Result<usize> {
        self.book
            .adopt_v1(ebpf, &pin_dir.join(proxy_common::XLB_VIPS6_V1))
    }

    /// Copies the flows of the connection table earlier builds pinned as
    /// [`proxy_common::XLB_CONNS6_V1`] (keyed by the whole [`XlbFlow6`])
    /// under `pin_dir` (if any) into this build's [`proxy_common::XLB_CONNS6`]
    /// (keyed by [`flow_hash6`], the flow stored beside its real), so
    /// established IPv6 flows keep their node across the upgrade, then
    /// unpins the old table. Flows the earlier program records between this
    /// copy and the swap of the uplink program are not copied (they stay
    /// on their node unless the ring changes before their next packet).
    /// Returns how many flows were copied.
    ///
    /// Errors: the old table cannot be read or the new one written; the
    /// old pin is then left in place.
    pub fn adopt_conns_v1(ebpf: &mut Ebpf, pin_dir: &std::path::Path) -> anyhow::Result<usize> {
        let path = pin_dir.join(proxy_common::XLB_CONNS6_V1);
        if !path.exists() {
            return Ok(0);
        }
        let data = aya::maps::MapData::from_pin(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let old: BpfHashMap<_, XlbFlow6, XlbConn> =
            BpfHashMap::try_from(aya::maps::Map::LruHashMap(data))
                .with_context(|| format!("reading {}", path.display()))?;
        // Entries the old program evicts while this reads are skipped.
        let flows: Vec<(XlbFlow6, XlbConn)> = old.iter().filter_map(Result::ok).collect();
        let mut new: BpfHashMap<_, u64, XlbConn6> =
            BpfHashMap::try_from(map_mut(ebpf, proxy_common::XLB_CONNS6)?)?;
        for (flow, conn) in &flows {
            let flow = XlbFlow6 {
                pad: [0; 3],
                ..*flow
            };
            let value = XlbConn6 {
                real: conn.real,
                pad: 0,
                flow,
            };
            new.insert(flow_hash6(&flow), value, 0)
                .with_context(|| format!("writing {}", proxy_common::XLB_CONNS6))?;
        }
        std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
        Ok(flows.len())
    }

    /// Makes the kernel's IPv6 tables hold exactly `vips` (as
    /// [`super::ExternalVips::apply`]: reals first, rings rebuilt only for
    /// VIPs whose healthy reals changed, each swapped in with one update,
    /// gone VIPs and reals removed).
    ///
    /// Errors: the same VIP:port/protocol twice, more than
    /// [`MAX_XLB_VIPS6`] entries or [`MAX_XLB_REALS6`] reals, a map update
    /// refused. The tables then hold what was written before the error.
    pub fn apply(
        &mut self,
        ebpf: &mut Ebpf,
        vips: &[ExternalVip6],
    ) -> anyhow::Result<super::XlbReport> {
        let want = wanted(
            vips,
            |v| (vip_key(v), &v.reals[..]),
            |k| k.vip,
            MAX_XLB_VIPS6,
            "IPv6 ",
            |v| {
                format!(
                    "external VIP [{}]:{}/{:?} is listed twice",
                    v.vip, v.port, v.protocol
                )
            },
        )?;
        {
            let mut reals: Array<_, XlbReal6> =
                Array::try_from(map_mut(ebpf, proxy_common::XLB_REALS6)?)?;
            self.book
                .reals
                .add(&want.listed, MAX_XLB_REALS6, "IPv6 reals", |i, a| {
                    Ok(reals.set(i, XlbReal6 { ip: a.octets() }, 0)?)
                })?;
        }
        self.book
            .write_vips::<XlbReal6>(ebpf, want, proxy_common::XLB_REALS6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_entries_keep_ipv6_nodes_and_name_what_is_left_out() {
        let svc = super::super::xlb_book::tests::service;
        let (list, warnings) = external_vips6(&[
            svc("198.51.100.7", &[("192.168.0.11", 1)], 0),
            svc("2001:db8::7", &[("fd00::11", 2), ("fd00::12", 0)], 1),
        ]);
        assert_eq!(
            list,
            vec![ExternalVip6 {
                vip: "2001:db8::7".parse().unwrap(),
                port: 80,
                protocol: L4Protocol::Tcp,
                reals: vec![
                    ("fd00::11".parse().unwrap(), 2),
                    ("fd00::12".parse().unwrap(), 0)
                ],
            }]
        );
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("front.web.svc.cluster.local")
                && warnings[0].contains("[2001:db8::7]:80")
                && warnings[0].contains("status.hostIPs"),
            "{warnings:?}"
        );
    }
}
