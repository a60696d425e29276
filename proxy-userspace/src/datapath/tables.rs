//! Writes a snapshot's L4 services into `SERVICES`, `BACKENDS` and `MAGLEV`.
//!
//! A service whose backends changed gets a new backend set under a fresh id,
//! written beside the old one; then its single `SERVICES` entry is swapped,
//! so a `connect()` sees either the whole old set or the whole new one
//! (Cilium and Katran swap the same way). The old set is deleted after.
//! Unchanged services are not touched, so re-applying a snapshot costs
//! nothing in the kernel.
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use anyhow::{bail, Context};
use proxy_common::{
    lb, mode, proto, Backend, BackendKey, BackendStatsKey, MaglevTable, ServiceKey, ServiceValue,
    MAGLEV_TABLE_SIZE, MAX_SLOTS_PER_SERVICE,
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
    /// Services the kernel data path cannot carry, with the reason
    /// (e.g. an IPv6 VIP).
    pub skipped: Vec<String>,
}

/// The kernel form of one service: what is compared to decide whether it
/// changed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    mode: u8,
    lb: u8,
    /// Healthy IPv4 backends, sorted, with weights.
    backends: Vec<(SocketAddrV4, u32)>,
}

struct Installed {
    /// `None` when recovered from pinned maps after a restart: the next
    /// apply rewrites it once (same backends give the same Maglev table,
    /// so no client moves).
    entry: Option<Entry>,
    value: ServiceValue,
    /// The backends of its set, as `BACKEND_STATS` keys.
    backend_keys: Vec<BackendStatsKey>,
}

/// Userspace mirror of what is in `SERVICES`.
pub struct ServiceTables {
    installed: BTreeMap<ServiceKey, Installed>,
    /// Backend set ids in use (non-zero `svc_id`s of `installed`).
    ids: HashSet<u32>,
    next_id: u32,
    /// `SERVICE_STATS` index of each service.
    service_stats: IndexPool<ServiceKey>,
    /// `BACKEND_STATS` index of each backend address and protocol.
    backend_stats: IndexPool<BackendStatsKey>,
}

impl ServiceTables {
    /// Reads the (possibly pinned, from an earlier run) `SERVICES` and
    /// `BACKENDS` maps, with the counter indexes their values carry, and
    /// deletes backend sets no service points at (left by a crash between
    /// writing a set and swapping it in).
    pub fn recover(maps: &mut Maps) -> anyhow::Result<Self> {
        let mut installed = BTreeMap::new();
        let mut service_stats =
            IndexPool::new(proxy_common::SERVICE_STATS, proxy_common::MAX_SERVICES);
        for item in maps.services.iter() {
            let (key, value) = item.context("reading SERVICES")?;
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
        let sets: std::collections::HashMap<u32, u32> = installed
            .values()
            .filter(|i| i.value.svc_id != 0)
            .map(|i| (i.value.svc_id, i.value.backend_count))
            .collect();
        let mut backend_stats =
            IndexPool::new(proxy_common::BACKEND_STATS, proxy_common::MAX_BACKEND_STATS);
        let mut set_backends: std::collections::HashMap<u32, Vec<Backend>> =
            std::collections::HashMap::new();
        for item in maps.backends.iter() {
            let (k, b) = item.context("reading BACKENDS")?;
            if sets.get(&k.svc_id).is_some_and(|&count| k.slot < count) {
                set_backends.entry(k.svc_id).or_default().push(b);
            }
        }
        for (key, i) in installed.iter_mut() {
            let Some(bs) = set_backends.get(&i.value.svc_id) else {
                continue;
            };
            for b in bs {
                let sk = BackendStatsKey {
                    ip: b.ip,
                    port: b.port,
                    proto: key.proto,
                    pad: 0,
                };
                backend_stats.adopt(sk, b.stats_index);
                i.backend_keys.push(sk);
            }
            i.backend_keys.sort_unstable_by_key(|k| (k.ip, k.port));
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
            .filter(|k| sets.get(&k.svc_id).is_none_or(|&count| k.slot >= count))
            .collect();
        for k in orphans {
            let _ = maps.backends.remove(&k);
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
        })
    }

    /// The `SERVICE_STATS` index of the service `key`.
    pub fn service_stats_index(&self, key: &ServiceKey) -> Option<u32> {
        self.service_stats.get(key)
    }

    /// The `BACKEND_STATS` index of a backend address and protocol.
    pub fn backend_stats_index(&self, key: &BackendStatsKey) -> Option<u32> {
        self.backend_stats.get(key)
    }

    /// Number of services in the kernel.
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
        let mut desired: BTreeMap<ServiceKey, (Entry, &str)> = BTreeMap::new();
        for s in services {
            let Some((key, entry)) = kernel_form(s, &mut report) else {
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
                    delete_set(maps, &p.value);
                    report.updated += 1;
                }
                None => report.added += 1,
            }
        }
        let stale: Vec<ServiceKey> = self
            .installed
            .keys()
            .filter(|k| !desired.contains_key(k))
            .copied()
            .collect();
        for key in stale {
            let _ = maps.services.remove(&key);
            if let Some(old) = self.installed.remove(&key) {
                self.ids.remove(&old.value.svc_id);
                delete_set(maps, &old.value);
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
        let mut freed: Vec<BackendStatsKey> = Vec::new();
        let mut seen: HashSet<ServiceKey> = HashSet::new();
        for s in services {
            if touched.is_empty() {
                break;
            }
            if !touched.contains(&(s.vip, s.port, s.protocol)) {
                continue;
            }
            let Some((key, entry)) = kernel_form(s, &mut report) else {
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
                    delete_set(maps, &p.value);
                    freed.extend(p.backend_keys);
                    report.updated += 1;
                }
                None => report.added += 1,
            }
        }
        for (vip, port, protocol) in &changes.removed {
            let Some(key) = service_key(*vip, *port, *protocol) else {
                continue;
            };
            let _ = maps.services.remove(&key);
            if let Some(old) = self.installed.remove(&key) {
                self.ids.remove(&old.value.svc_id);
                delete_set(maps, &old.value);
                freed.extend(old.backend_keys);
                self.service_stats.release(&key);
                report.removed += 1;
            }
        }
        // Counter slots of backends no service has any more.
        freed.sort_unstable_by_key(|k| (k.ip, k.port, k.proto));
        freed.dedup();
        if !freed.is_empty() {
            let still: HashSet<BackendStatsKey> = self
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
    /// the new `SERVICES` value and the set's backends as counter keys.
    fn write(
        &mut self,
        maps: &mut Maps,
        key: &ServiceKey,
        e: &Entry,
    ) -> anyhow::Result<(ServiceValue, Vec<BackendStatsKey>)> {
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
        let mut backend_keys = Vec::new();
        // UDP is balanced in the kernel whatever the mode (the proxy has no
        // UDP listener), so a REDIRECT-mode UDP port gets its set too.
        let balanced = e.mode == mode::L4 || key.proto == proto::UDP;
        if balanced && !e.backends.is_empty() {
            let mut indexes = Vec::with_capacity(e.backends.len());
            for (a, _) in &e.backends {
                let k = stats_key(a, key.proto);
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
            if let Err(err) = write_set(maps, id, e, &order, &indexes) {
                value.backend_count = order.len() as u32;
                delete_set(maps, &value);
                return Err(err);
            }
            value.backend_count = order.len() as u32;
        }
        if let Err(err) = maps.services.insert(key, value, 0) {
            delete_set(maps, &value);
            return Err(err).context("SERVICES is full");
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
        let live: HashSet<BackendStatsKey> = installed
            .values()
            .flat_map(|i| i.backend_keys.iter().copied())
            .collect();
        self.backend_stats.retain(|k| live.contains(k));
    }
}

/// Writes backend set `id`: slot `s` holds backend `order[s]` of `e`,
/// whose counter index is `stats[order[s]]`.
fn write_set(
    maps: &mut Maps,
    id: u32,
    e: &Entry,
    order: &[usize],
    stats: &[u32],
) -> anyhow::Result<()> {
    for (slot, &b) in order.iter().enumerate() {
        let key = BackendKey {
            svc_id: id,
            slot: slot as u32,
        };
        maps.backends
            .insert(key, backend(&e.backends[b].0, stats[b]), 0)
            .context("BACKENDS is full")?;
    }
    if e.lb == lb::MAGLEV {
        let addrs: Vec<(SocketAddr, u32)> = e
            .backends
            .iter()
            .map(|(a, w)| (SocketAddr::V4(*a), *w))
            .collect();
        let mut table = Box::new(MaglevTable {
            slots: [0; MAGLEV_TABLE_SIZE as usize],
        });
        table
            .slots
            .copy_from_slice(&maglev::table(&addrs, MAGLEV_TABLE_SIZE));
        maps.maglev
            .insert(id, table.as_ref(), 0)
            .context("MAGLEV is full")?;
    }
    Ok(())
}

/// Deletes the backend set (and Maglev table) `value` points at.
fn delete_set(maps: &mut Maps, value: &ServiceValue) {
    if value.svc_id == 0 {
        return;
    }
    for slot in 0..value.backend_count {
        let _ = maps.backends.remove(&BackendKey {
            svc_id: value.svc_id,
            slot,
        });
    }
    if value.lb == lb::MAGLEV {
        let _ = maps.maglev.remove(&value.svc_id);
    }
}

/// The kernel key and entry of `s`, or `None` (noted in `report`) when the
/// kernel cannot carry it.
/// The `SERVICES` key of an IPv4 `vip:port/protocol`; `None` for IPv6.
fn service_key(vip: IpAddr, port: u16, protocol: L4Protocol) -> Option<ServiceKey> {
    let vip = v4(vip)?;
    Some(ServiceKey {
        vip: proxy_common::ipv4_to_be(u32::from(vip)),
        port: proxy_common::port_to_be(port),
        proto: match protocol {
            L4Protocol::Tcp => proto::TCP,
            L4Protocol::Udp => proto::UDP,
        },
        pad: 0,
    })
}

fn kernel_form(s: &L4Service, report: &mut ApplyReport) -> Option<(ServiceKey, Entry)> {
    let Some(vip) = v4(s.vip) else {
        report.skipped.push(format!(
            "{} {}:{}: IPv6 VIPs are not balanced in the kernel yet",
            s.host, s.vip, s.port
        ));
        return None;
    };
    let proto_ = match s.protocol {
        L4Protocol::Tcp => proto::TCP,
        L4Protocol::Udp => proto::UDP,
    };
    let key = ServiceKey {
        vip: proxy_common::ipv4_to_be(u32::from(vip)),
        port: proxy_common::port_to_be(s.port),
        proto: proto_,
        pad: 0,
    };
    let mut backends: Vec<(SocketAddrV4, u32)> = s
        .backends
        .iter()
        // Not ready or terminating: never picked for new connections
        // (established ones never consult the table).
        .filter(|b| b.healthy)
        .filter_map(|b| {
            Some((
                SocketAddrV4::new(v4(b.addr.ip())?, b.addr.port()),
                b.weight.max(1),
            ))
        })
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
    Some((key, entry))
}

fn v4(ip: IpAddr) -> Option<std::net::Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    }
}

fn backend(a: &SocketAddrV4, stats_index: u32) -> Backend {
    Backend {
        ip: proxy_common::ipv4_to_be(u32::from(*a.ip())),
        port: proxy_common::port_to_be(a.port()),
        pad: 0,
        stats_index,
    }
}

pub(super) fn stats_key(a: &SocketAddrV4, proto_: u8) -> BackendStatsKey {
    BackendStatsKey {
        ip: proxy_common::ipv4_to_be(u32::from(*a.ip())),
        port: proxy_common::port_to_be(a.port()),
        proto: proto_,
        pad: 0,
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

    #[test]
    fn kernel_form_keeps_healthy_ipv4_backends_sorted() {
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
        let (key, entry) = kernel_form(&s, &mut report).unwrap();
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
        assert!(report.skipped.is_empty());
    }

    #[test]
    fn ipv6_vips_are_skipped_with_a_reason_and_mapped_ones_kept() {
        let mut report = ApplyReport::default();
        assert!(kernel_form(&svc("fd00::5", &[]), &mut report).is_none());
        assert_eq!(report.skipped.len(), 1);
        assert!(
            report.skipped[0].contains("reviews.default.svc.cluster.local"),
            "{:?}",
            report.skipped
        );
        let (key, _) = kernel_form(&svc("::ffff:10.96.0.5", &[]), &mut report).unwrap();
        assert_eq!(key.vip, u32::from_ne_bytes([10, 96, 0, 5]));
    }
}
