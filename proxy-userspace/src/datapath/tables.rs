//! Writes a snapshot's L4 services into `SERVICES`, `BACKENDS` and `MAGLEV`
//! (IPv4 VIPs, IPv4-mapped ones included) and `SERVICES6` / `BACKENDS6`
//! (native IPv6 VIPs; the Maglev tables and backend set ids are shared).
//!
//! A service whose backends changed gets a new backend set under a fresh id,
//! written beside the old one; then its single `SERVICES` entry is swapped,
//! so a `connect()` sees either the whole old set or the whole new one
//! (Cilium and Katran swap the same way). The old set is deleted after.
//! Unchanged services are not touched, so re-applying a snapshot costs
//! nothing in the kernel.
//!
//! Address families: a VIP is balanced over the backends of its own family
//! only, as kube-proxy and Cilium do for dual-stack Services (the IPv4
//! ClusterIP over the IPv4 EndpointSlice, the IPv6 one over the IPv6
//! slice); a socket is never translated across families.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use anyhow::{bail, Context};
use proxy_common::{
    ipv6_words, lb, mode, proto, Backend, Backend6, BackendKey, MaglevTable, ServiceKey,
    ServiceKey6, ServiceValue, MAGLEV_TABLE_SIZE, MAX_SLOTS_PER_SERVICE,
};
use strait_config::snapshot::diff::L4Key;
use strait_config::snapshot::{Changes, L4LoadBalancer, L4Mode, L4Protocol, L4Service};

use super::{counters::IndexPool, maglev, maps::Maps, slots};

/// What [`super::Datapath::apply`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Services written for the first time.
    pub added: usize,
    /// Services whose mode, load balancer or backends changed (swapped).
    pub updated: usize,
    /// Services removed because the snapshot no longer has them.
    pub removed: usize,
    /// Services already as the snapshot has them.
    pub unchanged: usize,
    /// Services the kernel data path cannot carry, with the reason.
    pub skipped: Vec<String>,
    /// Services written so that the kernel refuses their connections
    /// (fail closed), with the reason: REDIRECT-mode TCP on an IPv6 VIP
    /// while the node proxy has no IPv6 listener. Also logged as warnings.
    pub refused: Vec<String>,
}

/// A `SERVICES` or `SERVICES6` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SvcKey {
    /// An IPv4 (or IPv4-mapped) VIP.
    V4(ServiceKey),
    /// A native IPv6 VIP.
    V6(ServiceKey6),
}

impl SvcKey {
    fn is_v6(&self) -> bool {
        matches!(self, SvcKey::V6(_))
    }

    fn proto(&self) -> u8 {
        match self {
            SvcKey::V4(k) => k.proto,
            SvcKey::V6(k) => k.proto,
        }
    }
}

/// A backend address and protocol: the key of a `BACKEND_STATS` index
/// (both families share the array).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendStat {
    /// Backend address (IPv4-mapped addresses as IPv4).
    pub ip: IpAddr,
    /// Backend port (host order).
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
}

/// The kernel form of one service: what is compared to decide whether it
/// changed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    mode: u8,
    lb: u8,
    /// Healthy backends of the VIP's family, sorted, with weights.
    backends: Vec<(SocketAddr, u32)>,
}

struct Installed {
    /// `None` when recovered from pinned maps after a restart: the next
    /// apply rewrites it once (same backends give the same Maglev table,
    /// so no client moves).
    entry: Option<Entry>,
    value: ServiceValue,
    /// The backends of its set, as `BACKEND_STATS` keys.
    backend_keys: Vec<BackendStat>,
}

/// Userspace mirror of what is in `SERVICES` and `SERVICES6`.
pub struct ServiceTables {
    installed: BTreeMap<SvcKey, Installed>,
    /// Backend set ids in use (non-zero `svc_id`s of `installed`).
    ids: HashSet<u32>,
    next_id: u32,
    /// `SERVICE_STATS` index of each service.
    service_stats: IndexPool<SvcKey>,
    /// `BACKEND_STATS` index of each backend address and protocol.
    backend_stats: IndexPool<BackendStat>,
    /// Whether the node proxy has an IPv6 listener (`PROXY_CONFIG6` set):
    /// without one, REDIRECT-mode TCP on an IPv6 VIP is refused by the
    /// kernel and reported in [`ApplyReport::refused`].
    pub(super) proxy6: bool,
}

impl ServiceTables {
    /// Reads the (possibly pinned, from an earlier run) service and backend
    /// maps of both families, with the counter indexes their values carry,
    /// and deletes backend sets no service points at (left by a crash
    /// between writing a set and swapping it in).
    pub fn recover(maps: &mut Maps) -> anyhow::Result<Self> {
        let mut installed = BTreeMap::new();
        let mut service_stats =
            IndexPool::new(proxy_common::SERVICE_STATS, proxy_common::MAX_SERVICES);
        let mut found: Vec<(SvcKey, ServiceValue)> = Vec::new();
        for item in maps.services.iter() {
            let (key, value) = item.context("reading SERVICES")?;
            found.push((SvcKey::V4(key), value));
        }
        for item in maps.services6.iter() {
            let (key, value) = item.context("reading SERVICES6")?;
            found.push((SvcKey::V6(key), value));
        }
        for (key, value) in found {
            service_stats.adopt(key, value.stats_index);
            installed.insert(
                key,
                Installed {
                    entry: None,
                    value,
                    backend_keys: Vec::new(),
                },
            );
        }
        service_stats.finish_adopting();
        // Set id → (slot count, IPv6).
        let sets: HashMap<u32, (u32, bool)> = installed
            .iter()
            .filter(|(_, i)| i.value.svc_id != 0)
            .map(|(k, i)| (i.value.svc_id, (i.value.backend_count, k.is_v6())))
            .collect();
        let live = |k: &BackendKey, v6: bool| {
            sets.get(&k.svc_id)
                .is_some_and(|&(count, f)| f == v6 && k.slot < count)
        };
        let mut backend_stats =
            IndexPool::new(proxy_common::BACKEND_STATS, proxy_common::MAX_BACKEND_STATS);
        let mut set_backends: HashMap<u32, Vec<(SocketAddr, u32)>> = HashMap::new();
        for item in maps.backends.iter() {
            let (k, b) = item.context("reading BACKENDS")?;
            if live(&k, false) {
                set_backends
                    .entry(k.svc_id)
                    .or_default()
                    .push((v4_socket(b.ip, b.port), b.stats_index));
            }
        }
        for item in maps.backends6.iter() {
            let (k, b) = item.context("reading BACKENDS6")?;
            if live(&k, true) {
                set_backends
                    .entry(k.svc_id)
                    .or_default()
                    .push((v6_socket(b.ip, b.port), b.stats_index));
            }
        }
        for (key, i) in installed.iter_mut() {
            let Some(bs) = set_backends.get(&i.value.svc_id) else {
                continue;
            };
            for (addr, index) in bs {
                let sk = stats_key(addr, key.proto());
                backend_stats.adopt(sk, *index);
                i.backend_keys.push(sk);
            }
            i.backend_keys.sort_unstable();
            i.backend_keys.dedup();
        }
        backend_stats.finish_adopting();
        let next_id = sets
            .keys()
            .copied()
            .max()
            .unwrap_or(0)
            .wrapping_add(1)
            .max(1);
        let orphans: Vec<BackendKey> = maps
            .backends
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !live(k, false))
            .collect();
        for k in orphans {
            let _ = maps.backends.remove(&k);
        }
        let orphans: Vec<BackendKey> = maps
            .backends6
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !live(k, true))
            .collect();
        for k in orphans {
            let _ = maps.backends6.remove(&k);
        }
        let tables: Vec<u32> = maps.maglev.keys().filter_map(Result::ok).collect();
        for id in tables.into_iter().filter(|id| !sets.contains_key(id)) {
            let _ = maps.maglev.remove(&id);
        }
        let ids = sets.keys().copied().collect();
        Ok(Self {
            installed,
            ids,
            next_id,
            service_stats,
            backend_stats,
            proxy6: false,
        })
    }

    /// The `SERVICE_STATS` index of the service `key`.
    pub fn service_stats_index(&self, key: &SvcKey) -> Option<u32> {
        self.service_stats.get(key)
    }

    /// The `BACKEND_STATS` index of a backend address and protocol.
    pub fn backend_stats_index(&self, key: &BackendStat) -> Option<u32> {
        self.backend_stats.get(key)
    }

    /// Number of services in the kernel (both families).
    pub fn service_count(&self) -> usize {
        self.installed.len()
    }

    /// Makes the kernel tables hold exactly `services`.
    ///
    /// Errors: two services with the same VIP, port and protocol; a map is
    /// full (the service being written is left as it was).
    pub fn apply(
        &mut self,
        maps: &mut Maps,
        services: &[L4Service],
    ) -> anyhow::Result<ApplyReport> {
        let mut report = ApplyReport::default();
        let mut desired: BTreeMap<SvcKey, (Entry, &str)> = BTreeMap::new();
        for s in services {
            let Some((key, entry)) = kernel_form(s, self.proxy6, &mut report) else {
                continue;
            };
            if let Some((_, other)) = desired.insert(key, (entry, &s.host)) {
                bail!(
                    "L4 services {other} and {} both claim {}:{}/{:?}",
                    s.host,
                    s.vip,
                    s.port,
                    s.protocol
                );
            }
        }
        for (key, (entry, host)) in &desired {
            let old = self.installed.get(key);
            if old.and_then(|i| i.entry.as_ref()) == Some(entry) {
                report.unchanged += 1;
                continue;
            }
            let (value, backend_keys) = self
                .write(maps, key, entry)
                .with_context(|| format!("writing L4 service {host} to the kernel"))?;
            let prev = self.installed.insert(
                *key,
                Installed {
                    entry: Some(entry.clone()),
                    value,
                    backend_keys,
                },
            );
            self.ids.insert(value.svc_id);
            match prev {
                Some(p) => {
                    self.ids.remove(&p.value.svc_id);
                    delete_set(maps, key, &p.value);
                    report.updated += 1;
                }
                None => report.added += 1,
            }
        }
        let stale: Vec<SvcKey> = self
            .installed
            .keys()
            .filter(|k| !desired.contains_key(k))
            .copied()
            .collect();
        for key in stale {
            remove_service(maps, &key);
            if let Some(old) = self.installed.remove(&key) {
                self.ids.remove(&old.value.svc_id);
                delete_set(maps, &key, &old.value);
            }
            report.removed += 1;
        }
        self.sweep_stats();
        Ok(report)
    }

    /// Applies only what `changes` names (from the snapshot diff, keys of
    /// `services`): added and changed services are written (changed ones
    /// swapped as in [`ServiceTables::apply`]), removed ones deleted; no
    /// other service is read or compared, so one endpoint change costs one
    /// service's writes however many services there are.
    ///
    /// Errors: as [`ServiceTables::apply`].
    pub fn apply_changes(
        &mut self,
        maps: &mut Maps,
        services: &[L4Service],
        changes: &Changes<L4Key>,
    ) -> anyhow::Result<ApplyReport> {
        let mut report = ApplyReport::default();
        let touched: HashSet<&L4Key> = changes.added.iter().chain(&changes.changed).collect();
        let mut freed: Vec<BackendStat> = Vec::new();
        let mut seen: HashSet<SvcKey> = HashSet::new();
        for s in services {
            if touched.is_empty() {
                break;
            }
            if !touched.contains(&(s.vip, s.port, s.protocol)) {
                continue;
            }
            let Some((key, entry)) = kernel_form(s, self.proxy6, &mut report) else {
                continue;
            };
            if !seen.insert(key) {
                bail!(
                    "two L4 services claim {}:{}/{:?} ({})",
                    s.vip,
                    s.port,
                    s.protocol,
                    s.host
                );
            }
            if self.installed.get(&key).and_then(|i| i.entry.as_ref()) == Some(&entry) {
                report.unchanged += 1;
                continue;
            }
            let (value, backend_keys) = self
                .write(maps, &key, &entry)
                .with_context(|| format!("writing L4 service {} to the kernel", s.host))?;
            let prev = self.installed.insert(
                key,
                Installed {
                    entry: Some(entry),
                    value,
                    backend_keys,
                },
            );
            self.ids.insert(value.svc_id);
            match prev {
                Some(p) => {
                    self.ids.remove(&p.value.svc_id);
                    delete_set(maps, &key, &p.value);
                    freed.extend(p.backend_keys);
                    report.updated += 1;
                }
                None => report.added += 1,
            }
        }
        for (vip, port, protocol) in &changes.removed {
            let key = service_key(*vip, *port, *protocol);
            remove_service(maps, &key);
            if let Some(old) = self.installed.remove(&key) {
                self.ids.remove(&old.value.svc_id);
                delete_set(maps, &key, &old.value);
                freed.extend(old.backend_keys);
                self.service_stats.release(&key);
                report.removed += 1;
            }
        }
        // Counter slots of backends no service has any more.
        freed.sort_unstable();
        freed.dedup();
        if !freed.is_empty() {
            let still: HashSet<BackendStat> = self
                .installed
                .values()
                .flat_map(|i| i.backend_keys.iter())
                .filter(|k| freed.contains(k))
                .copied()
                .collect();
            for k in freed.iter().filter(|k| !still.contains(k)) {
                self.backend_stats.release(k);
            }
        }
        Ok(report)
    }

    /// Writes `entry`'s backend set under a new id and swaps it in; returns
    /// the new service value and the set's backends as counter keys.
    fn write(
        &mut self,
        maps: &mut Maps,
        key: &SvcKey,
        e: &Entry,
    ) -> anyhow::Result<(ServiceValue, Vec<BackendStat>)> {
        let stats = &mut maps.service_stats;
        let stats_index = self
            .service_stats
            .assign(*key, |i| super::counters::zero(stats, i))?;
        let mut value = ServiceValue {
            svc_id: 0,
            backend_count: 0,
            mode: e.mode,
            lb: e.lb,
            flags: 0,
            pad: 0,
            stats_index,
        };
        if !self.proxy6 && key.is_v6() && e.mode == mode::REDIRECT && key.proto() == proto::TCP {
            tracing::warn!(
                ?key,
                "an IPv6 VIP needs the node proxy (policy, mTLS or L7 routing), which has no IPv6 listener: its TCP connections are refused (fail closed)"
            );
        }
        let mut backend_keys = Vec::new();
        // UDP is balanced in the kernel whatever the mode (the proxy has no
        // UDP listener), so a REDIRECT-mode UDP port gets its set too.
        let balanced = e.mode == mode::L4 || key.proto() == proto::UDP;
        if balanced && !e.backends.is_empty() {
            let mut indexes = Vec::with_capacity(e.backends.len());
            for (a, _) in &e.backends {
                let k = stats_key(a, key.proto());
                let stats = &mut maps.backend_stats;
                indexes.push(
                    self.backend_stats
                        .assign(k, |i| super::counters::zero(stats, i))?,
                );
                backend_keys.push(k);
            }
            let id = self.alloc_id();
            let order: Vec<usize> = if e.lb == lb::MAGLEV {
                (0..e.backends.len()).collect()
            } else {
                let weights: Vec<u32> = e.backends.iter().map(|b| b.1).collect();
                slots::expand(&weights, MAX_SLOTS_PER_SERVICE)
            };
            value.svc_id = id;
            value.backend_count = order.len() as u32;
            if let Err(err) = write_set(maps, key, id, e, &order, &indexes) {
                delete_set(maps, key, &value);
                return Err(err);
            }
        }
        let inserted = match key {
            SvcKey::V4(k) => maps
                .services
                .insert(k, value, 0)
                .context("SERVICES is full"),
            SvcKey::V6(k) => maps
                .services6
                .insert(k, value, 0)
                .context("SERVICES6 is full"),
        };
        if let Err(err) = inserted {
            delete_set(maps, key, &value);
            return Err(err);
        }
        Ok((value, backend_keys))
    }

    fn alloc_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.ids.contains(&id) {
                return id;
            }
        }
    }

    /// Frees the counter indexes of services and backends no service has
    /// any more (their counters restart from zero if they come back, as
    /// they did when the counters lived in hash maps).
    fn sweep_stats(&mut self) {
        let installed = &self.installed;
        self.service_stats.retain(|k| installed.contains_key(k));
        let live: HashSet<BackendStat> = installed
            .values()
            .flat_map(|i| i.backend_keys.iter().copied())
            .collect();
        self.backend_stats.retain(|k| live.contains(k));
    }
}

/// Deletes the `SERVICES` / `SERVICES6` entry `key`.
fn remove_service(maps: &mut Maps, key: &SvcKey) {
    let _ = match key {
        SvcKey::V4(k) => maps.services.remove(k),
        SvcKey::V6(k) => maps.services6.remove(k),
    };
}

/// Writes backend set `id`: slot `s` holds backend `order[s]` of `e`,
/// whose counter index is `stats[order[s]]`.
fn write_set(
    maps: &mut Maps,
    key: &SvcKey,
    id: u32,
    e: &Entry,
    order: &[usize],
    stats: &[u32],
) -> anyhow::Result<()> {
    for (slot, &b) in order.iter().enumerate() {
        let bkey = BackendKey {
            svc_id: id,
            slot: slot as u32,
        };
        let addr = &e.backends[b].0;
        match (key, addr) {
            (SvcKey::V4(_), SocketAddr::V4(a)) => maps
                .backends
                .insert(bkey, backend(a, stats[b]), 0)
                .context("BACKENDS is full")?,
            (SvcKey::V6(_), SocketAddr::V6(a)) => maps
                .backends6
                .insert(bkey, backend6(a.ip(), a.port(), stats[b]), 0)
                .context("BACKENDS6 is full")?,
            _ => bail!("backend {addr} is not of its VIP's address family"),
        }
    }
    if e.lb == lb::MAGLEV {
        let mut table = Box::new(MaglevTable {
            slots: [0; MAGLEV_TABLE_SIZE as usize],
        });
        table
            .slots
            .copy_from_slice(&maglev::table(&e.backends, MAGLEV_TABLE_SIZE));
        maps.maglev
            .insert(id, table.as_ref(), 0)
            .context("MAGLEV is full")?;
    }
    Ok(())
}

/// Deletes the backend set (and Maglev table) `value` points at.
fn delete_set(maps: &mut Maps, key: &SvcKey, value: &ServiceValue) {
    if value.svc_id == 0 {
        return;
    }
    for slot in 0..value.backend_count {
        let k = BackendKey {
            svc_id: value.svc_id,
            slot,
        };
        let _ = match key {
            SvcKey::V4(_) => maps.backends.remove(&k),
            SvcKey::V6(_) => maps.backends6.remove(&k),
        };
    }
    if value.lb == lb::MAGLEV {
        let _ = maps.maglev.remove(&value.svc_id);
    }
}

/// The kernel key of `vip:port/protocol`: `SERVICES` for IPv4 and
/// IPv4-mapped VIPs, `SERVICES6` for native IPv6 ones.
pub fn service_key(vip: IpAddr, port: u16, protocol: L4Protocol) -> SvcKey {
    let proto_ = match protocol {
        L4Protocol::Tcp => proto::TCP,
        L4Protocol::Udp => proto::UDP,
    };
    let port = proxy_common::port_to_be(port);
    match unmap(vip) {
        IpAddr::V4(a) => SvcKey::V4(ServiceKey {
            vip: proxy_common::ipv4_to_be(u32::from(a)),
            port,
            proto: proto_,
            pad: 0,
        }),
        IpAddr::V6(a) => SvcKey::V6(ServiceKey6 {
            vip: ipv6_words(a.octets()),
            port,
            proto: proto_,
            pad: 0,
        }),
    }
}

/// The kernel key and entry of `s`, or `None` (noted in `report`) when the
/// kernel cannot carry it; `proxy6`: the node proxy has an IPv6 listener
/// (else REDIRECT-mode TCP on an IPv6 VIP is noted refused).
fn kernel_form(s: &L4Service, proxy6: bool, report: &mut ApplyReport) -> Option<(SvcKey, Entry)> {
    let key = service_key(s.vip, s.port, s.protocol);
    let v6 = key.is_v6();
    let mut backends: Vec<(SocketAddr, u32)> = s
        .backends
        .iter()
        // Not ready or terminating: never picked for new connections
        // (established ones never consult the table).
        .filter(|b| b.healthy)
        .map(|b| {
            (
                SocketAddr::new(unmap(b.addr.ip()), b.addr.port()),
                b.weight.max(1),
            )
        })
        // The VIP's family only: a socket is never translated across
        // families (a dual-stack Service's other slice serves its other
        // VIP).
        .filter(|(a, _)| a.is_ipv6() == v6)
        .collect();
    backends.sort();
    backends.dedup_by_key(|b| b.0);
    let entry = Entry {
        mode: match s.mode {
            L4Mode::L4 => mode::L4,
            L4Mode::Redirect => mode::REDIRECT,
        },
        lb: match s.load_balancer {
            L4LoadBalancer::Random => lb::RANDOM,
            L4LoadBalancer::RoundRobin => lb::ROUND_ROBIN,
            L4LoadBalancer::Maglev => lb::MAGLEV,
        },
        backends,
    };
    if !proxy6 && v6 && entry.mode == mode::REDIRECT && s.protocol == L4Protocol::Tcp {
        let why = format!(
            "{} [{}]:{}/TCP: needs the node proxy (policy, mTLS or L7 routing) but the proxy has no IPv6 listener; connections to this IPv6 VIP are refused (fail closed)",
            s.host, s.vip, s.port
        );
        report.refused.push(why);
    }
    Some((key, entry))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn v4_socket(ip: u32, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(u32::from_be(ip).into()), u16::from_be(port))
}

fn v6_socket(ip: [u32; 4], port: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::from(proxy_common::ipv6_from_words(ip))),
        u16::from_be(port),
    )
}

fn backend(a: &std::net::SocketAddrV4, stats_index: u32) -> Backend {
    Backend {
        ip: proxy_common::ipv4_to_be(u32::from(*a.ip())),
        port: proxy_common::port_to_be(a.port()),
        pad: 0,
        stats_index,
    }
}

fn backend6(ip: &Ipv6Addr, port: u16, stats_index: u32) -> Backend6 {
    Backend6 {
        ip: ipv6_words(ip.octets()),
        port: proxy_common::port_to_be(port),
        pad: 0,
        stats_index,
    }
}

/// The counter key of backend `a` (IPv4-mapped addresses as IPv4).
pub(super) fn stats_key(a: &SocketAddr, proto_: u8) -> BackendStat {
    BackendStat {
        ip: unmap(a.ip()),
        port: a.port(),
        proto: proto_,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_config::snapshot::L4Backend;

    fn svc(vip: &str, backends: &[(&str, u32, bool)]) -> L4Service {
        L4Service {
            host: "reviews.default.svc.cluster.local".into(),
            vip: vip.parse().unwrap(),
            port: 9080,
            protocol: L4Protocol::Tcp,
            mode: L4Mode::L4,
            load_balancer: L4LoadBalancer::RoundRobin,
            backends: backends
                .iter()
                .map(|&(a, weight, healthy)| L4Backend {
                    addr: a.parse().unwrap(),
                    weight,
                    healthy,
                })
                .collect(),
        }
    }

    fn v4_key(k: SvcKey) -> ServiceKey {
        match k {
            SvcKey::V4(k) => k,
            SvcKey::V6(k) => panic!("IPv6 key {k:?}"),
        }
    }

    #[test]
    fn kernel_form_keeps_healthy_backends_of_the_vip_family_sorted() {
        let mut report = ApplyReport::default();
        let s = svc(
            "10.96.0.5",
            &[
                ("10.244.0.9:9080", 3, true),
                ("10.244.0.7:9080", 0, true),
                ("10.244.0.8:9080", 1, false),
                ("[fd00::1]:9080", 1, true),
            ],
        );
        let (key, entry) = kernel_form(&s, false, &mut report).unwrap();
        let key = v4_key(key);
        assert_eq!(key.vip, u32::from_ne_bytes([10, 96, 0, 5]));
        assert_eq!(key.port, 9080u16.to_be());
        assert_eq!(key.proto, proto::TCP);
        assert_eq!(entry.lb, lb::ROUND_ROBIN);
        assert_eq!(
            entry.backends,
            vec![
                ("10.244.0.7:9080".parse().unwrap(), 1),
                ("10.244.0.9:9080".parse().unwrap(), 3),
            ]
        );
        assert!(report.skipped.is_empty() && report.refused.is_empty());
    }

    #[test]
    fn ipv6_vips_get_ipv6_keys_and_ipv6_backends_only() {
        let mut report = ApplyReport::default();
        let s = svc(
            "fd00:96::5",
            &[
                ("[fd00:244::9]:9080", 1, true),
                ("10.244.0.7:9080", 1, true),
                ("[fd00:244::7]:9080", 2, true),
                ("[fd00:244::8]:9080", 1, false),
            ],
        );
        let (key, entry) = kernel_form(&s, false, &mut report).unwrap();
        let SvcKey::V6(k) = key else {
            panic!("{key:?}")
        };
        let want: std::net::Ipv6Addr = "fd00:96::5".parse().unwrap();
        assert_eq!(proxy_common::ipv6_from_words(k.vip), want.octets());
        assert_eq!(k.port, 9080u16.to_be());
        assert_eq!(
            entry.backends,
            vec![
                ("[fd00:244::7]:9080".parse().unwrap(), 2),
                ("[fd00:244::9]:9080".parse().unwrap(), 1),
            ]
        );
        assert!(report.skipped.is_empty() && report.refused.is_empty());
        // An IPv4-mapped VIP stays an IPv4 service over IPv4 backends.
        let (key, entry) = kernel_form(
            &svc("::ffff:10.96.0.5", &[("10.0.0.1:1", 1, true)]),
            false,
            &mut report,
        )
        .unwrap();
        assert_eq!(v4_key(key).vip, u32::from_ne_bytes([10, 96, 0, 5]));
        assert_eq!(entry.backends.len(), 1);
    }

    #[test]
    fn redirect_tcp_on_an_ipv6_vip_is_reported_refused() {
        let mut report = ApplyReport::default();
        let mut s = svc("fd00:96::6", &[("[fd00:244::1]:9080", 1, true)]);
        s.mode = L4Mode::Redirect;
        kernel_form(&s, false, &mut report).unwrap();
        assert_eq!(report.refused.len(), 1, "{report:?}");
        assert!(report.refused[0].contains("reviews.default.svc.cluster.local"));
        assert!(report.refused[0].contains("fd00:96::6"));
        // UDP is balanced whatever the mode; IPv4 REDIRECT goes to the proxy.
        let mut report = ApplyReport::default();
        s.protocol = L4Protocol::Udp;
        kernel_form(&s, false, &mut report).unwrap();
        let mut v4 = svc("10.96.0.6", &[]);
        v4.mode = L4Mode::Redirect;
        kernel_form(&v4, false, &mut report).unwrap();
        assert!(report.refused.is_empty(), "{report:?}");
        // With the proxy's IPv6 listener it is redirected, not refused.
        let mut report = ApplyReport::default();
        s.protocol = L4Protocol::Tcp;
        let (_, entry) = kernel_form(&s, true, &mut report).unwrap();
        assert_eq!(entry.mode, mode::REDIRECT);
        assert!(report.refused.is_empty(), "{report:?}");
    }
}
