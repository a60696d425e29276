//! The XDP deny filter from userspace: AuthorizationPolicy DENY source
//! prefixes dropped at the driver, before any socket sees them, IPv4 and
//! IPv6, each prefix with its own drop counter.
//!
//! Which rules qualify (a DENY whose only condition is the source:
//! `ipBlocks` / `remoteIpBlocks`) is the policy layer's decision; this
//! module makes the kernel tries hold a given list of prefixes.
use std::collections::{BTreeSet, HashMap, HashSet};

use proxy_common::{deny_mode, DenyConfig, DenyDstKey, DenyV4Key, DENY_SCOPED};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context};
use aya::{
    maps::{
        lpm_trie::Key, Array, HashMap as BpfHashMap, LpmTrie, MapData, PerCpuArray, PerCpuValues,
    },
    programs::Xdp,
    Ebpf,
};

/// Loads the XDP deny program of an object from [`super::load`] (not
/// attached) and returns it, e.g. for `BPF_PROG_TEST_RUN`.
pub fn load_xdp_deny(ebpf: &mut Ebpf) -> anyhow::Result<&mut Xdp> {
    super::xlb::load_xdp(ebpf, super::programs::XDP_DENY)
}

/// Adds an IPv4 source prefix (`addr`, `prefix_len` bits) to the XDP deny
/// list, its drops counted in `DENY_STATS[counter]`. Prefer
/// [`sync_deny_sources`], which manages counters.
pub fn deny_source(
    ebpf: &mut Ebpf,
    addr: std::net::Ipv4Addr,
    prefix_len: u32,
    counter: u32,
) -> anyhow::Result<()> {
    if prefix_len > 32 {
        bail!("deny prefix {addr}/{prefix_len}: an IPv4 prefix length is at most 32");
    }
    let mask = if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - prefix_len)
    };
    let addr = Ipv4Addr::from(u32::from(addr) & mask);
    let mut trie: LpmTrie<_, u32, u32> =
        LpmTrie::try_from(ebpf.map_mut(proxy_common::DENY_V4).context("DENY_V4 map")?)?;
    trie.insert(&Key::new(prefix_len, u32::from(addr).to_be()), counter, 0)?;
    let mut by_len: BpfHashMap<_, DenyV4Key, u32> = BpfHashMap::try_from(
        ebpf.map_mut(proxy_common::DENY_V4_LEN)
            .context("DENY_V4_LEN map")?,
    )?;
    by_len.insert(v4_len_key(addr, prefix_len as u8), counter, 0)?;
    // Then the /16 summary entries that send lookups to it.
    let mut summary: Array<_, u64> = Array::try_from(
        ebpf.map_mut(proxy_common::DENY_V4_SLASH16)
            .context("DENY_V4_SLASH16 map")?,
    )?;
    let first = u32::from(addr) >> 16;
    let count = if prefix_len >= 16 {
        1
    } else {
        1u32 << (16 - prefix_len)
    };
    for i in first..first + count {
        let old = summary.get(&i, 0)?;
        summary.set(i, slash16_entry(old | 1 << prefix_len), 0)?;
    }
    Ok(())
}

/// Unpins the IPv6 "maybe" bitmap earlier builds pinned under `pin_dir`
/// ([`proxy_common::DENY_V6_SUMMARY_V1`]), if any: this build decides IPv6
/// sources from `DENY_V6_BUCKETS`, rebuilt from the `DENY_V6` trie when the
/// deny tries are recovered. A program of the earlier build still attached
/// keeps its map until it is replaced; this build's programs walk the trie
/// until the first sync (the earlier daemon's `DENY_CONFIG` mode is read as
/// [`deny_mode::TRIE`]). Returns whether a pin was removed.
///
/// Errors: the pin exists and cannot be removed.
pub(super) fn unpin_v1_summary(pin_dir: &std::path::Path) -> anyhow::Result<bool> {
    let path = pin_dir.join(proxy_common::DENY_V6_SUMMARY_V1);
    if !path.exists() {
        return Ok(false);
    }
    std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
    tracing::info!(pin = %path.display(), "unpinned an earlier build's IPv6 deny bitmap (superseded by DENY_V6_BUCKETS)");
    Ok(true)
}

/// A source prefix: address and prefix length. IPv4-mapped IPv6 prefixes
/// (`::ffff:a.b.c.d/96+n`) are stored as IPv4 `/n`.
pub type SourcePrefix = (IpAddr, u8);

/// What [`sync_deny_sources`] left in the tries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DenyReport {
    /// IPv4 prefixes in `DENY_V4`.
    pub v4: usize,
    /// IPv6 prefixes in `DENY_V6`.
    pub v6: usize,
    /// (destination, prefix) pairs of scoped prefixes in `DENY_DST`.
    pub destinations: usize,
}

/// The prefix with host bits cleared, IPv4-mapped IPv6 made IPv4.
///
/// Errors: a prefix length over 32 (IPv4) or 128 (IPv6).
fn normalise((addr, len): SourcePrefix) -> anyhow::Result<SourcePrefix> {
    match addr {
        IpAddr::V4(a) => {
            if len > 32 {
                bail!("deny prefix {a}/{len}: an IPv4 prefix length is at most 32");
            }
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            Ok((IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)), len))
        }
        IpAddr::V6(a) => {
            if len > 128 {
                bail!("deny prefix {a}/{len}: an IPv6 prefix length is at most 128");
            }
            if let (Some(v4), true) = (a.to_ipv4_mapped(), len >= 96) {
                return normalise((IpAddr::V4(v4), len - 96));
            }
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            Ok((IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)), len))
        }
    }
}

/// Which destinations a deny prefix applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyScope {
    /// Every packet from the prefix is dropped, whatever it is sent to
    /// (the raw filter: `strait x` tools, benchmarks).
    Any,
    /// Only TCP connections opened (SYN without ACK) from the prefix to
    /// these addresses are dropped: the workloads an AuthorizationPolicy
    /// DENY selects. Replies to the workloads' own connections, other
    /// protocols and the node itself are untouched.
    To(BTreeSet<IpAddr>),
}

/// The deny tries and their counters, taken out of a loaded object (the
/// programs keep their references).
///
/// IPv4 prefixes are also kept by exact (length, address) in `DENY_V4_LEN`
/// and summarised per /16 in `DENY_V4_SLASH16` (which lengths overlap each
/// /16): the programs load the source's /16 entry, stop there when it is 0
/// (most traffic), else do one hash lookup per length in it, longest first
/// (`DENY_CONFIG` says so: [`deny_mode::BY_SLASH16`]).
///
/// IPv6 prefixes are likewise kept by exact (length, address) in
/// `DENY_V6_LEN` and placed in `DENY_V6_BUCKETS` by the /48, /32 or /16
/// they fall in ([`proxy_common::deny6`], [`super::deny6`]): a source whose
/// three buckets are empty passes after three array loads; a bucket's
/// longest prefix is compared in place, its other lengths cost one hash
/// lookup each, longest first, the `DENY_V6` trie only past
/// [`proxy_common::DENY_V6_MAX_HASHED_LENGTHS`] lookups
/// ([`deny_mode::BY_LENGTH6`]).
pub struct DenyTries {
    v4: LpmTrie<MapData, u32, u32>,
    v4_len: BpfHashMap<MapData, DenyV4Key, u32>,
    slash16: Array<MapData, u64>,
    /// Non-zero `DENY_V4_SLASH16` entries as written.
    slash16_written: HashMap<u32, u64>,
    /// The `DENY_V4_DIR24` blocks those entries name.
    direct: super::deny4::Direct4,
    v6: LpmTrie<MapData, [u8; 16], u32>,
    /// IPv6 prefixes by exact (length, address) and their buckets
    /// (`DENY_V6_LEN`, `DENY_V6_BUCKETS`).
    v6x: super::deny6::Buckets6,
    dst: BpfHashMap<MapData, DenyDstKey, u32>,
    config: Array<MapData, DenyConfig>,
    stats: PerCpuArray<MapData, u64>,
    /// Prefix → (counter index, trie value as written).
    counters: HashMap<SourcePrefix, (u32, u32)>,
    /// `DENY_DST` entries written.
    destinations: HashSet<DenyDstKey>,
    /// Prefixes no longer wanted that may still be in `DENY_V4`,
    /// `DENY_V4_LEN`, `DENY_V6` or `DENY_V6_LEN`: removed at the end of a
    /// sync, after a grace period (or by the next sync, when one fails
    /// before its end).
    leaving: Vec<SourcePrefix>,
}

fn v4_len_key(a: Ipv4Addr, len: u8) -> DenyV4Key {
    DenyV4Key {
        prefix_len: len as u32,
        addr: u32::from(a),
    }
}

fn dst_key(addr: IpAddr, index: u32) -> DenyDstKey {
    let addr = match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    DenyDstKey { addr, index }
}

/// Whether prefix `outer` contains prefix `inner` (same family).
fn contains(outer: &SourcePrefix, inner: &SourcePrefix) -> bool {
    if outer.1 > inner.1 {
        return false;
    }
    match (outer.0, inner.0) {
        (IpAddr::V4(o), IpAddr::V4(i)) => {
            let mask = if outer.1 == 0 {
                0
            } else {
                u32::MAX << (32 - outer.1)
            };
            u32::from(o) == u32::from(i) & mask
        }
        (IpAddr::V6(o), IpAddr::V6(i)) => {
            let mask = if outer.1 == 0 {
                0
            } else {
                u128::MAX << (128 - outer.1)
            };
            u128::from(o) == u128::from(i) & mask
        }
        _ => false,
    }
}

impl DenyTries {
    /// Takes `DENY_V4`, `DENY_V4_LEN`, `DENY_V4_SLASH16`, `DENY_V6`,
    /// `DENY_V6_LEN`, `DENY_V6_BUCKETS`,
    /// `DENY_DST`, `DENY_CONFIG` and `DENY_STATS` out of `ebpf` (after
    /// loading the programs that use them).
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let v6x = super::deny6::Buckets6::take(ebpf)?;
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("map {name} missing from the eBPF object"))
        };
        Ok(Self {
            v4: LpmTrie::try_from(take(proxy_common::DENY_V4)?)?,
            v4_len: BpfHashMap::try_from(take(proxy_common::DENY_V4_LEN)?)?,
            slash16: Array::try_from(take(proxy_common::DENY_V4_SLASH16)?)?,
            slash16_written: HashMap::new(),
            direct: super::deny4::Direct4::new(Array::try_from(take(
                proxy_common::DENY_V4_DIR24,
            )?)?),
            v6: LpmTrie::try_from(take(proxy_common::DENY_V6)?)?,
            v6x,
            dst: BpfHashMap::try_from(take(proxy_common::DENY_DST)?)?,
            config: Array::try_from(take(proxy_common::DENY_CONFIG)?)?,
            stats: PerCpuArray::try_from(take(proxy_common::DENY_STATS)?)?,
            counters: HashMap::new(),
            destinations: HashSet::new(),
            leaving: Vec::new(),
        })
    }

    /// Learns what the tries already hold (maps pinned by an earlier run):
    /// the prefixes with their counters and scope flag, and the scoped
    /// destinations, so the next [`DenyTries::sync_scoped`] writes only
    /// the differences and removes what is no longer wanted — the drops
    /// never stop across a restart, and the counters keep counting.
    ///
    /// Errors: a map cannot be read.
    pub fn recover(&mut self) -> anyhow::Result<()> {
        self.counters.clear();
        self.leaving.clear();
        for item in self.v4.iter() {
            let (k, value) = item.context("reading DENY_V4")?;
            let a = Ipv4Addr::from(u32::from_be(k.data()));
            self.counters.insert(
                (IpAddr::V4(a), k.prefix_len() as u8),
                (value & !DENY_SCOPED, value),
            );
        }
        for item in self.v6.iter() {
            let (k, value) = item.context("reading DENY_V6")?;
            self.counters.insert(
                (IpAddr::V6(Ipv6Addr::from(k.data())), k.prefix_len() as u8),
                (value & !DENY_SCOPED, value),
            );
        }
        self.destinations = self
            .dst
            .keys()
            .collect::<Result<_, _>>()
            .context("reading DENY_DST")?;
        // The /16 summary as pinned, then made to cover every recovered
        // prefix (a summary new to this build starts empty, and would
        // hide them until the next sync).
        self.slash16_written.clear();
        for i in 0..proxy_common::DENY_SLASH16_ENTRIES {
            let v = self.slash16.get(&i, 0).context("reading DENY_V4_SLASH16")?;
            if v != 0 {
                self.slash16_written.insert(i, v);
            }
        }
        // Entries naming no valid block (a newer or corrupt writer's) take
        // the length path.
        for i in self.direct.recover(&self.slash16_written) {
            let old = self.slash16_written[&i];
            let entry = slash16_entry(old);
            super::deny4::publish(&mut self.slash16, i, old, entry)?;
            self.slash16_written.insert(i, entry);
        }
        for (i, bits) in slash16_summary(self.counters.keys()) {
            let old = self.slash16_written.get(&i).copied().unwrap_or(0);
            let union = with_lengths(old, bits);
            if union != old {
                self.slash16.set(i, union, 0)?;
                self.slash16_written.insert(i, union);
            }
        }
        // IPv6: the exact-length entries and buckets of every recovered
        // prefix (new to this build when an earlier one filled only
        // `DENY_V6`: its `DENY_CONFIG` still says walk the trie until the
        // next sync).
        self.v6x
            .recover(self.counters.iter().map(|(p, (_, v))| (p, *v)))
            .context("recovering the IPv6 deny buckets")?;
        Ok(())
    }

    /// Makes the tries hold exactly `prefixes`, each dropping every packet
    /// from it ([`DenyScope::Any`]); see [`DenyTries::sync_scoped`].
    ///
    /// Errors: as [`DenyTries::sync_scoped`].
    pub fn sync(&mut self, prefixes: &[SourcePrefix]) -> anyhow::Result<DenyReport> {
        let all: Vec<(SourcePrefix, DenyScope)> =
            prefixes.iter().map(|p| (*p, DenyScope::Any)).collect();
        self.sync_scoped(&all)
    }

    /// Makes the tries hold exactly `rules` (host bits cleared, duplicate
    /// prefixes merged, their scopes united): new prefixes get a zeroed
    /// drop counter, gone ones are removed, kept ones keep their counts.
    /// Takes effect for the next packet.
    ///
    /// Fail-closed order: a packet read while the tables change gets the
    /// old set's verdict or the new set's, never a pass both would drop.
    /// Everything new is written first (destinations, then prefix values,
    /// then the summary entries and buckets that lead to them), the lookup
    /// structures are then made exact, and only after an RCU grace period
    /// ([`super::grace`]) do the gone prefixes leave, and after another the
    /// stale `DENY_DST` entries; a sync that removes nothing waits for
    /// none (a grace period is about 10 ms).
    ///
    /// The kernel looks up only the longest prefix containing a source, so
    /// a scoped prefix also protects the destinations of every prefix that
    /// contains it (and drops everything if one of those is
    /// [`DenyScope::Any`]).
    ///
    /// Errors: a bad prefix length (nothing is changed), more than
    /// `MAX_DENY_PREFIXES` prefixes or `MAX_DENY_DESTINATIONS`
    /// (destination, prefix) pairs, a map update refused.
    pub fn sync_scoped(
        &mut self,
        rules: &[(SourcePrefix, DenyScope)],
    ) -> anyhow::Result<DenyReport> {
        let mut want: HashMap<SourcePrefix, DenyScope> = HashMap::new();
        for (p, scope) in rules {
            let p = normalise(*p)?;
            let merged = match (want.remove(&p), scope) {
                (None, s) => s.clone(),
                (Some(DenyScope::Any), _) | (_, DenyScope::Any) => DenyScope::Any,
                (Some(DenyScope::To(mut a)), DenyScope::To(b)) => {
                    a.extend(b.iter().copied());
                    DenyScope::To(a)
                }
            };
            want.insert(p, merged);
        }
        if want.len() > proxy_common::MAX_DENY_PREFIXES as usize {
            bail!(
                "{} deny prefixes exceed the XDP tries' {}",
                want.len(),
                proxy_common::MAX_DENY_PREFIXES
            );
        }
        // Longest match only: inherit the scopes of containing prefixes.
        let snapshot: Vec<(SourcePrefix, DenyScope)> =
            want.iter().map(|(p, s)| (*p, s.clone())).collect();
        for (p, scope) in want.iter_mut() {
            for (q, qs) in &snapshot {
                if q == p || !contains(q, p) {
                    continue;
                }
                *scope = match (std::mem::replace(scope, DenyScope::Any), qs) {
                    (DenyScope::Any, _) | (_, DenyScope::Any) => DenyScope::Any,
                    (DenyScope::To(mut a), DenyScope::To(b)) => {
                        a.extend(b.iter().copied());
                        DenyScope::To(a)
                    }
                };
            }
        }
        let pairs: usize = want
            .values()
            .map(|s| match s {
                DenyScope::Any => 0,
                DenyScope::To(d) => d.len(),
            })
            .sum();
        if pairs > proxy_common::MAX_DENY_DESTINATIONS as usize {
            bail!(
                "{pairs} (destination, deny prefix) pairs exceed the XDP table's {}",
                proxy_common::MAX_DENY_DESTINATIONS
            );
        }
        let gone: Vec<SourcePrefix> = self
            .counters
            .keys()
            .filter(|p| !want.contains_key(p))
            .copied()
            .collect();
        // Gone prefixes leave the tries and exact-length hashes last, once
        // no summary entry or bucket names their lengths and a grace
        // period has passed (removed first, a source in a gone prefix and
        // a new shorter one would pass while both sets drop it); their
        // counters are reused only when no other is free.
        let mut gone_index: Vec<u32> = Vec::new();
        for p in gone {
            if let Some((i, _)) = self.counters.remove(&p) {
                gone_index.push(i);
            }
            self.leaving.push(p);
        }
        // A prefix left by a sync that failed before removing it, wanted
        // again: written again as a new one.
        self.leaving.retain(|p| !want.contains_key(p));
        let mut used: HashSet<u32> = self.counters.values().map(|c| c.0).collect();
        used.extend(gone_index.iter().copied());
        let mut free = (0..proxy_common::MAX_DENY_PREFIXES)
            .filter(|i| !used.contains(i))
            .chain(gone_index.iter().copied());
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        let mut list: Vec<(&SourcePrefix, &DenyScope)> = want.iter().collect();
        list.sort_by_key(|(p, _)| **p);
        let mut dst_want: HashSet<DenyDstKey> = HashSet::new();
        let mut trie_writes: Vec<(SourcePrefix, u32)> = Vec::new();
        for (p, scope) in list {
            let index = match self.counters.get(p) {
                Some(c) => c.0,
                None => {
                    let i = free.next().context("DENY_STATS is full")?;
                    self.stats
                        .set(i, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
                    i
                }
            };
            let value = match scope {
                DenyScope::Any => index,
                DenyScope::To(dsts) => {
                    dst_want.extend(dsts.iter().map(|d| dst_key(*d, index)));
                    index | DENY_SCOPED
                }
            };
            if self.counters.get(p) != Some(&(index, value)) {
                trie_writes.push((*p, value));
            }
            self.counters.insert(*p, (index, value));
        }
        // /16 summary bits before the entries they lead to (the union of
        // old and new), the exact summary after: a lookup may try a length
        // with nothing in it, never skip one that has a prefix.
        let summary = slash16_summary(self.counters.keys());
        for (&i, &bits) in &summary {
            let old = self.slash16_written.get(&i).copied().unwrap_or(0);
            if bits & !old & SLASH16_LENGTHS != 0 {
                let union = with_lengths(old, bits);
                self.slash16.set(i, union, 0)?;
                self.slash16_written.insert(i, union);
            }
        }
        let buckets6 = super::deny6::buckets(self.counters.iter().map(|(p, (_, v))| (p, *v)));
        self.v6x.prepare(&buckets6)?;
        // Destinations before the trie values that send lookups to them;
        // stale destinations after.
        let new_dst: Vec<DenyDstKey> = dst_want.difference(&self.destinations).copied().collect();
        for k in new_dst {
            self.dst.insert(k, 0, 0).context("DENY_DST is full")?;
            self.destinations.insert(k);
        }
        for (p, value) in trie_writes {
            match p {
                (IpAddr::V4(a), len) => {
                    self.v4
                        .insert(&Key::new(len as u32, u32::from(a).to_be()), value, 0)
                        .context("DENY_V4 is full")?;
                    self.v4_len
                        .insert(v4_len_key(a, len), value, 0)
                        .context("DENY_V4_LEN is full")?;
                }
                (IpAddr::V6(a), len) => {
                    self.v6
                        .insert(&Key::new(len as u32, a.octets()), value, 0)
                        .context("DENY_V6 is full")?;
                    self.v6x.insert(a, len, value)?;
                }
            }
        }
        // The exact entries: lengths, and a leaf verdict or a filled
        // `DENY_V4_DIR24` block where one fits (`proxy_common::deny4`).
        let v4: Vec<(u32, u8, u32)> = self
            .counters
            .iter()
            .filter_map(|(p, (_, v))| match p {
                (IpAddr::V4(a), len) => Some((u32::from(*a), *len, *v)),
                _ => None,
            })
            .collect();
        let plan = super::deny4::plan(&v4);
        let mut touched: Vec<u32> = summary
            .keys()
            .chain(self.slash16_written.keys())
            .copied()
            .collect();
        touched.sort_unstable();
        touched.dedup();
        for i in touched {
            let bits = summary.get(&i).copied().unwrap_or(0);
            let entry = self.direct.place(i, bits, plan.get(&i))?;
            let old = self.slash16_written.get(&i).copied().unwrap_or(0);
            super::deny4::publish(&mut self.slash16, i, old, entry)?;
            self.direct.written(i, entry);
            if entry == 0 {
                self.slash16_written.remove(&i);
            } else {
                self.slash16_written.insert(i, entry);
            }
        }
        self.v6x.finish(&buckets6)?;
        // Entries first, then the lookup mode that may use them.
        let v4_lengths = self
            .counters
            .keys()
            .filter(|p| p.0.is_ipv4())
            .fold(0u64, |bits, p| bits | 1 << p.1);
        let v4_mode = if v4_lengths == 0 {
            deny_mode::EMPTY
        } else {
            deny_mode::BY_SLASH16
        };
        let v6_mode = if self.counters.keys().any(|p| p.0.is_ipv6()) {
            deny_mode::BY_LENGTH6
        } else {
            deny_mode::EMPTY
        };
        self.config.set(
            0,
            DenyConfig {
                v4_lengths,
                v4_mode,
                v6_mode,
            },
            0,
        )?;
        self.remove_unreachable(dst_want);
        Ok(DenyReport {
            v4: self.counters.keys().filter(|p| p.0.is_ipv4()).count(),
            v6: self.counters.keys().filter(|p| p.0.is_ipv6()).count(),
            destinations: self.destinations.len(),
        })
    }

    /// The last step of a sync, once the tables lead only to the wanted
    /// prefixes: after a grace period (a program run that read an old
    /// summary entry, bucket or trie path has finished), the prefixes no
    /// longer wanted ([`DenyTries::leaving`]) leave `DENY_V4`/`DENY_V4_LEN`/`DENY_V6`/`DENY_V6_LEN` and
    /// the blocks freed meanwhile become reusable; after another (a run
    /// that found a gone prefix's or a changed prefix's old scoped value
    /// has finished), the `DENY_DST` entries not in `dst_want` leave. Each
    /// wait is skipped when nothing is removed after it.
    fn remove_unreachable(&mut self, dst_want: HashSet<DenyDstKey>) {
        if !self.leaving.is_empty() {
            if super::grace::wait_before_removing() {
                self.direct.after_grace();
            }
            for p in std::mem::take(&mut self.leaving) {
                match p {
                    (IpAddr::V4(a), len) => {
                        let _ = self.v4.remove(&Key::new(len as u32, u32::from(a).to_be()));
                        let _ = self.v4_len.remove(&v4_len_key(a, len));
                    }
                    (IpAddr::V6(a), len) => {
                        let _ = self.v6.remove(&Key::new(len as u32, a.octets()));
                        self.v6x.remove(a, len);
                    }
                }
            }
        }
        if self.destinations.difference(&dst_want).next().is_some() {
            super::grace::wait_before_removing();
            for k in self.destinations.difference(&dst_want) {
                let _ = self.dst.remove(k);
            }
        }
        self.destinations = dst_want;
    }

    /// Makes the programs walk the `DENY_V6` trie for every IPv6 source,
    /// ignoring `DENY_V6_BUCKETS` and `DENY_V6_LEN` ([`deny_mode::TRIE`])
    /// until the next sync: the same verdicts, for A/B measurements
    /// (`bench-xdp --deny6-trie`).
    ///
    /// Errors: `DENY_CONFIG` cannot be read or written.
    pub fn walk_v6_trie_always(&mut self) -> anyhow::Result<()> {
        let mut cfg = self.config.get(&0, 0).context("reading DENY_CONFIG")?;
        if cfg.v6_mode == deny_mode::BY_LENGTH6 {
            cfg.v6_mode = deny_mode::TRIE;
            self.config.set(0, cfg, 0)?;
        }
        Ok(())
    }

    /// `DENY_V4_DIR24` blocks in use: /16s holding a prefix longer than 16
    /// bits that are decided by their /24 slot (the others with such
    /// prefixes take the length path).
    pub fn v4_blocks(&self) -> usize {
        self.direct.used()
    }

    /// Makes every IPv4 source take the length path (the `DENY_V4_SLASH16`
    /// summary, then one `DENY_V4_LEN` lookup per length: what earlier
    /// builds did), ignoring leaf verdicts and `DENY_V4_DIR24` blocks until
    /// the next sync: the same verdicts, for A/B measurements
    /// (`bench-xdp --deny4-by-length`).
    ///
    /// Errors: `DENY_V4_SLASH16` cannot be written.
    pub fn v4_by_length_always(&mut self) -> anyhow::Result<()> {
        let mut entries: Vec<(u32, u64)> =
            self.slash16_written.iter().map(|(i, e)| (*i, *e)).collect();
        entries.sort_unstable();
        for (i, e) in entries {
            let plain = slash16_entry(e);
            if plain != e {
                super::deny4::publish(&mut self.slash16, i, e, plain)?;
                self.slash16_written.insert(i, plain);
                self.direct.written(i, plain);
            }
        }
        Ok(())
    }

    /// Packets dropped per prefix since it was added, summed over CPUs,
    /// sorted by prefix.
    pub fn drops(&self) -> Vec<(SourcePrefix, u64)> {
        let mut out: Vec<(SourcePrefix, u64)> = self
            .counters
            .iter()
            .map(|(p, (i, _))| {
                let n = self
                    .stats
                    .get(i, 0)
                    .map(|v| v.iter().sum())
                    .unwrap_or_default();
                (*p, n)
            })
            .collect();
        out.sort();
        out
    }
}

/// The `DENY_V4_SLASH16` entries `prefixes` need: for each /16 (top 16
/// bits, host order) that an IPv4 prefix overlaps, the bit of its length,
/// and the longest length at [`proxy_common::DENY_SLASH16_LONGEST_SHIFT`].
fn slash16_summary<'a>(prefixes: impl Iterator<Item = &'a SourcePrefix>) -> HashMap<u32, u64> {
    let mut out: HashMap<u32, u64> = HashMap::new();
    for (addr, len) in prefixes {
        let IpAddr::V4(a) = addr else { continue };
        let first = u32::from(*a) >> 16;
        let count = if *len >= 16 { 1 } else { 1u32 << (16 - len) };
        for i in first..first + count {
            *out.entry(i).or_default() |= 1u64 << len;
        }
    }
    for entry in out.values_mut() {
        *entry = slash16_entry(*entry);
    }
    out
}

/// The length bits of a `DENY_V4_SLASH16` entry.
const SLASH16_LENGTHS: u64 = (1 << 33) - 1;

/// Entry `old` with the lengths of `bits` added (the longest recomputed,
/// `old`'s kind and payload kept: the union written before new prefixes).
fn with_lengths(old: u64, bits: u64) -> u64 {
    slash16_entry((old | bits) & SLASH16_LENGTHS) | (old & proxy_common::DENY_V4_DIRECT_MASK)
}

/// A `DENY_V4_SLASH16` entry from its length bits (the longest added;
/// other bits ignored, so the kind is the length path).
fn slash16_entry(lengths: u64) -> u64 {
    let lengths = lengths & ((1 << 33) - 1);
    if lengths == 0 {
        return 0;
    }
    let longest = 63 - lengths.leading_zeros() as u64;
    lengths | longest << proxy_common::DENY_SLASH16_LONGEST_SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slash16_summary_marks_every_overlapped_slash16_with_the_length() {
        let p = |s: &str, l| (s.parse::<IpAddr>().unwrap(), l);
        let s = slash16_summary(
            [
                p("192.0.2.0", 24),
                p("192.0.2.5", 32),
                p("10.0.0.0", 8),
                p("2001:db8::", 32),
            ]
            .iter(),
        );
        assert_eq!(s[&0xc000], 1 << 24 | 1 << 32 | 32 << 56);
        assert_eq!(s.len(), 1 + 256);
        assert!((0x0a00..=0x0aff).all(|i| s[&i] == 1 << 8 | 8 << 56));
        assert!(!s.contains_key(&0x0b00));
        let all = slash16_summary([p("0.0.0.0", 0)].iter());
        assert_eq!(all.len(), 65_536);
        assert_eq!(all[&0xffff], 1);
    }

    #[test]
    fn prefixes_are_normalised_and_checked() {
        let p = |s: &str, l| (s.parse::<IpAddr>().unwrap(), l);
        assert_eq!(normalise(p("192.0.2.77", 24)).unwrap(), p("192.0.2.0", 24));
        assert_eq!(normalise(p("10.1.2.3", 0)).unwrap(), p("0.0.0.0", 0));
        assert_eq!(
            normalise(p("2001:db8::1", 32)).unwrap(),
            p("2001:db8::", 32)
        );
        assert_eq!(
            normalise(p("::ffff:192.0.2.9", 120)).unwrap(),
            p("192.0.2.0", 24)
        );
        assert!(normalise(p("10.0.0.0", 33)).is_err());
        assert!(normalise(p("::", 129)).is_err());
    }
}
