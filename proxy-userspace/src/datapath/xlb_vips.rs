//! One address family's XDP balancer tables as the daemon last wrote them
//! ([`VipBook`]): the reals' indexes, the VIPs' rings, the address markers
//! and the VIP table, with what [`super::xlb`] (IPv4) and [`super::xlb6`]
//! (IPv6) do alike around them — recovering them from pinned maps,
//! adopting an earlier build's VIP hash map, writing rings and VIP entries
//! and removing what is gone. Each family writes its own reals (IPv4's
//! may be 4in6) and keeps its own key encoding ([`VipFamily`]).
use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::hash::Hash;

use anyhow::Context;
use aya::{
    maps::{Array, HashMap as BpfHashMap},
    Ebpf,
};
use proxy_common::{MaglevTable, XlbVip, XLB_ADDRESS_ONLY};

use super::xlb::XlbReport;
use super::xlb_book::{Reals, Rings, Wanted};
use super::xlb_table::{VipFamily, VipTable};

/// Ring ids of both families' VIPs start at 1: 0 is never a ring, see
/// [`proxy_common::XlbVipSlot`] and [`proxy_common::XlbVipSlot6`] (builds
/// with the VIP hash maps started at 0; such a ring is given a new id when
/// adopted).
const FIRST_RING: u32 = 1;

/// Map `name` of `ebpf`, read-only.
///
/// Errors: `"map {name} missing from the eBPF object"`.
pub(super) fn map_ref<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<&'a aya::maps::Map> {
    ebpf.map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}

/// Map `name` of `ebpf`, writable.
///
/// Errors: `"map {name} missing from the eBPF object"`.
pub(super) fn map_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> anyhow::Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}

/// One family's tables, as last written: reals (addresses `A`) and their
/// indexes, VIP entries and their rings, the VIP addresses with a marker
/// entry, and the VIP table ([`VipFamily::MAP`]).
pub(super) struct VipBook<F: VipFamily, A> {
    /// Reals and their indexes in the family's reals array.
    pub(super) reals: Reals<A>,
    /// VIP entries and their rings in [`VipFamily::RINGS`].
    rings: Rings<F::Key, A>,
    /// VIP addresses with a marker entry.
    markers: HashSet<F::Addr>,
    /// The VIP table as written.
    table: VipTable<F>,
}

impl<F: VipFamily, A> Default for VipBook<F, A> {
    fn default() -> Self {
        Self {
            reals: Reals::default(),
            rings: Rings::new(FIRST_RING),
            markers: HashSet::new(),
            table: VipTable::default(),
        }
    }
}

impl<F: VipFamily, A: Copy + Ord + Hash + Display> VipBook<F, A> {
    /// The bookkeeping of the VIP table and rings an earlier run left in
    /// pinned maps (`reals` recovered by the caller from its reals arrays):
    /// each VIP keeps its ring id, rebuilt at the next
    /// [`VipBook::write_vips`]; ids no VIP uses are free, 0 included, so a
    /// ring 0 an earlier build left is removed, never reused.
    ///
    /// Errors: a map is missing or cannot be read.
    pub(super) fn recover(ebpf: &Ebpf, reals: Reals<A>) -> anyhow::Result<Self> {
        let map = |name: &str| map_ref(ebpf, name);
        let table: Array<_, F::Bucket> = Array::try_from(map(F::MAP)?)?;
        let table = VipTable::<F>::read(&table)?;
        let mut markers = HashSet::new();
        let mut ids = HashMap::new();
        for (k, v) in table.entries() {
            if v.ring == XLB_ADDRESS_ONLY {
                markers.insert(F::addr(&k));
            } else if v.ring != 0 {
                ids.insert(k, v.ring);
            }
        }
        let rings: BpfHashMap<_, u32, MaglevTable> = BpfHashMap::try_from(map(F::RINGS)?)?;
        let stored: Vec<u32> = rings
            .keys()
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {}", F::RINGS))?;
        Ok(Self {
            reals,
            rings: Rings::recover(FIRST_RING, ids, &stored),
            markers,
            table,
        })
    }

    /// Copies the VIPs of the hash map (key → [`XlbVip`]) an earlier build
    /// pinned at `path` (if any) into the VIP table, address markers
    /// included, each VIP's ring id adopted — a VIP on ring 0 or on an id
    /// already in use gets a fresh id with a copy of its ring (the old id
    /// is freed, its ring removed, at the next apply) — then unpins the old
    /// map. Returns how many entries were copied.
    ///
    /// Errors: the old map cannot be read or the table written; the old pin
    /// is then left in place.
    pub(super) fn adopt_v1(
        &mut self,
        ebpf: &mut Ebpf,
        path: &std::path::Path,
    ) -> anyhow::Result<usize> {
        if !path.exists() {
            return Ok(0);
        }
        let data = aya::maps::MapData::from_pin(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let old: BpfHashMap<_, F::Key, XlbVip> =
            BpfHashMap::try_from(aya::maps::Map::HashMap(data))
                .with_context(|| format!("reading {}", path.display()))?;
        let entries: Vec<(F::Key, XlbVip)> = old
            .iter()
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {}", path.display()))?;
        for (key, mut v) in entries.iter().copied() {
            if v.ring == XLB_ADDRESS_ONLY {
                self.markers.insert(F::addr(&key));
            } else {
                if v.ring == 0 || self.rings.uses(v.ring) {
                    let id = self.rings.fresh_id();
                    copy_ring(ebpf, F::RINGS, v.ring, id)?;
                    v.ring = id;
                }
                self.rings.adopt(F::with_pad(key, 0), v.ring);
            }
            let mut map: Array<_, F::Bucket> = Array::try_from(map_mut(ebpf, F::MAP)?)?;
            self.table.set(&mut map, &key, v)?;
        }
        std::fs::remove_file(path).with_context(|| format!("unpinning {}", path.display()))?;
        Ok(entries.len())
    }

    /// After the caller wrote the reals of `wanted.listed` (so rings never
    /// name an index without an address): rebuilds the ring of each entry
    /// of `wanted.entries` whose healthy reals changed ([`Rings::build`]),
    /// writes the VIP table (gone entries and markers removed first, their
    /// slots free for the new ones; then each entry with its ring and each
    /// address of `wanted.addrs` as a marker), removes the rings of removed
    /// VIPs, then clears the entries of `reals_map` (values `R`) of reals
    /// no VIP lists. Returns what the tables hold.
    ///
    /// Errors: a map is missing or refuses an update; the tables then hold
    /// what was written before the error.
    pub(super) fn write_vips<R: aya::Pod + Default>(
        &mut self,
        ebpf: &mut Ebpf,
        wanted: Wanted<'_, F::Key, F::Addr, A>,
        reals_map: &str,
    ) -> anyhow::Result<XlbReport> {
        let Wanted {
            entries: want,
            addrs,
            listed,
        } = wanted;
        let mut report = XlbReport::default();
        {
            let mut rings: BpfHashMap<_, u32, MaglevTable> =
                BpfHashMap::try_from(map_mut(ebpf, F::RINGS)?)?;
            report.without_reals = self.rings.build(&mut rings, F::RINGS, &want, &self.reals)?;
        }
        {
            let mut map: Array<_, F::Bucket> = Array::try_from(map_mut(ebpf, F::MAP)?)?;
            // Gone entries first: their slots are free for the new ones.
            for k in self.rings.remove_unwanted(&want) {
                self.table.remove(&mut map, &k)?;
            }
            for a in self.markers.difference(&addrs) {
                self.table.remove(&mut map, &F::marker(*a))?;
            }
            for key in want.keys() {
                let ring = self.rings.id(key).expect("every wanted VIP has a ring");
                self.table.set(&mut map, key, XlbVip { ring, flags: 0 })?;
            }
            for a in &addrs {
                let v = XlbVip {
                    ring: XLB_ADDRESS_ONLY,
                    flags: 0,
                };
                self.table.set(&mut map, &F::marker(*a), v)?;
            }
            self.markers = addrs;
        }
        {
            // Rings of removed VIPs, then reals no VIP lists any more.
            let mut rings: BpfHashMap<_, u32, MaglevTable> =
                BpfHashMap::try_from(map_mut(ebpf, F::RINGS)?)?;
            self.rings.remove_free(&mut rings);
            let mut reals: Array<_, R> = Array::try_from(map_mut(ebpf, reals_map)?)?;
            self.reals
                .remove_unlisted(&listed, |i| Ok(reals.set(i, R::default(), 0)?))?;
        }
        report.vips = want.len();
        report.reals = self.reals.len();
        Ok(report)
    }
}

/// Copies ring `from` of the ring map `map` (`XLB_RINGS` or `XLB_RINGS6`)
/// to a new id `to` (nothing when `from` is absent): the rare path of
/// [`VipBook::adopt_v1`]. Its own function, never inlined, because aya's
/// `get` returns the [`MaglevTable`] by value (~192 KiB of stack):
/// inlined, the stack probes of the caller's frame touched those pages of
/// the main thread's stack on every start, even when no v1 table is
/// pinned, and they stayed resident (issue 20).
///
/// Errors: `map` missing from the object or full.
#[cold]
#[inline(never)]
pub(crate) fn copy_ring(ebpf: &mut Ebpf, map: &str, from: u32, to: u32) -> anyhow::Result<()> {
    let mut rings: BpfHashMap<_, u32, MaglevTable> = BpfHashMap::try_from(map_mut(ebpf, map)?)?;
    if let Ok(ring) = rings.get(&from, 0) {
        rings
            .insert(to, ring, 0)
            .with_context(|| format!("{map} is full"))?;
    }
    Ok(())
}
