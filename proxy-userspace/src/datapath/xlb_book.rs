//! The XDP balancer's bookkeeping both address families share: which real
//! (node address) holds which index of the reals array ([`Reals`]), which
//! VIP:port/protocol entry holds which Maglev ring and what it was built
//! from ([`Rings`]), and the selection of a snapshot's external services of
//! one family ([`family_entries`]). [`super::xlb`] (IPv4) and
//! [`super::xlb6`] (IPv6) write their own open-addressed VIP arrays
//! ([`super::xlb_table`]) and key/real encodings around it.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Display;
use std::hash::Hash;
use std::net::IpAddr;

use anyhow::{bail, Context};
use aya::maps::{HashMap as BpfHashMap, MapData};
use proxy_common::{MaglevTable, MAGLEV_TABLE_SIZE};
use strait_config::snapshot::ExternalL4Service;

/// A service of `services` whose VIP is of one family (`pick` returns the
/// address for it), with its nodes `real` accepts (IPv6: IPv6 nodes; IPv4:
/// IPv4 nodes and, for 4in6, IPv6 ones) and weights, and how many of its
/// endpoints have no node address `real` accepts (its `unplaced` plus
/// the nodes `real` refuses): the caller warns when that is > 0.
pub(crate) fn family_entries<A: Copy, R: Copy>(
    services: &[ExternalL4Service],
    pick: fn(IpAddr) -> Option<A>,
    real: fn(IpAddr) -> Option<R>,
) -> impl Iterator<Item = (&ExternalL4Service, A, Vec<(R, u32)>, usize)> {
    services.iter().filter_map(move |s| {
        let vip = pick(s.vip)?;
        let reals: Vec<(R, u32)> = s
            .nodes
            .iter()
            .filter_map(|(a, w)| real(*a).map(|a| (a, *w)))
            .collect();
        let unplaced = s.unplaced as usize + s.nodes.len() - reals.len();
        Some((s, vip, reals, unplaced))
    })
}

/// What one apply wants in the kernel: each VIP:port/protocol entry's key
/// (`K`) with its reals, the VIP addresses (`M`, one marker entry each)
/// and every real any entry lists.
pub(crate) struct Wanted<'a, K, M, A> {
    /// Entries by key, each with its reals and weights.
    pub(crate) entries: BTreeMap<K, &'a [(A, u32)]>,
    /// The entries' VIP addresses.
    pub(crate) addrs: HashSet<M>,
    /// Every real listed by an entry (drained ones included).
    pub(crate) listed: HashSet<A>,
}

/// The [`Wanted`] of `vips`: `entry` gives an item's key and reals,
/// `address` a key's VIP address.
///
/// Errors: two items with the same key (`twice` names the item), or more
/// entries plus addresses than `max` (`"{n} external {family}VIP ports on
/// {m} addresses exceed the XDP balancer's {max} entries"`).
pub(crate) fn wanted<'a, T, K: Ord, M: Hash + Eq, A: Copy + Hash + Eq>(
    vips: &'a [T],
    entry: impl Fn(&'a T) -> (K, &'a [(A, u32)]),
    address: impl Fn(&K) -> M,
    max: u32,
    family: &str,
    twice: impl Fn(&T) -> String,
) -> anyhow::Result<Wanted<'a, K, M, A>> {
    let mut entries = BTreeMap::new();
    for v in vips {
        let (key, reals) = entry(v);
        if entries.insert(key, reals).is_some() {
            bail!("{}", twice(v));
        }
    }
    let addrs: HashSet<M> = entries.keys().map(address).collect();
    if entries.len() + addrs.len() > max as usize {
        bail!(
            "{} external {family}VIP ports on {} addresses exceed the XDP balancer's {max} entries",
            entries.len(),
            addrs.len()
        );
    }
    let listed = entries
        .values()
        .flat_map(|reals| reals.iter().map(|(a, _)| *a))
        .collect();
    Ok(Wanted {
        entries,
        addrs,
        listed,
    })
}

/// Real addresses and their indexes in a reals array of `max` entries.
///
/// A real keeps its index while any VIP lists it; new reals take fresh
/// indexes before freed ones, so a flow still pinned in the connection
/// table to a freed index does not land on an unrelated node.
#[derive(Debug)]
pub(crate) struct Reals<A> {
    index: HashMap<A, u32>,
    free: Vec<u32>,
    next: u32,
}

impl<A> Default for Reals<A> {
    fn default() -> Self {
        Self {
            index: HashMap::new(),
            free: Vec::new(),
            next: 0,
        }
    }
}

impl<A: Copy + Ord + Hash> Reals<A> {
    /// The bookkeeping of a reals array read back in index order (`None`:
    /// an empty entry): indexes below the highest used one that are empty
    /// are free.
    pub(crate) fn recover(
        entries: impl IntoIterator<Item = anyhow::Result<Option<A>>>,
    ) -> anyhow::Result<Self> {
        let mut out = Self::default();
        let mut used = Vec::new();
        for (i, a) in entries.into_iter().enumerate() {
            if let Some(a) = a? {
                out.index.insert(a, i as u32);
                used.push(i as u32);
            }
        }
        out.next = used.iter().max().map_or(0, |m| m + 1);
        out.free = (0..out.next).filter(|i| !used.contains(i)).collect();
        Ok(out)
    }

    /// Gives each address of `listed` without an index one (in address
    /// order) and writes it with `write(index, address)`.
    ///
    /// Errors: more than `max` reals (`"more than {max} XDP balancer
    /// {what}"`), or `write`'s error.
    pub(crate) fn add(
        &mut self,
        listed: &HashSet<A>,
        max: u32,
        what: &str,
        mut write: impl FnMut(u32, A) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut new: Vec<A> = listed
            .iter()
            .filter(|a| !self.index.contains_key(a))
            .copied()
            .collect();
        new.sort();
        for a in new {
            let i = if self.next < max {
                self.next += 1;
                self.next - 1
            } else if let Some(i) = self.free.pop() {
                i
            } else {
                bail!("more than {max} XDP balancer {what}");
            };
            write(i, a)?;
            self.index.insert(a, i);
        }
        Ok(())
    }

    /// Frees the index of each real not in `listed`, clearing its entry
    /// with `clear(index)` first.
    ///
    /// Errors: `clear`'s error (that real and those after it keep theirs).
    pub(crate) fn remove_unlisted(
        &mut self,
        listed: &HashSet<A>,
        mut clear: impl FnMut(u32) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let gone: Vec<A> = self
            .index
            .keys()
            .filter(|a| !listed.contains(a))
            .copied()
            .collect();
        for a in gone {
            if let Some(i) = self.index.get(&a).copied() {
                clear(i)?;
                self.index.remove(&a);
                self.free.push(i);
            }
        }
        Ok(())
    }

    /// Reals with an index.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }
}

/// VIP:port/protocol entries (keys `K`) and their Maglev ring ids, with
/// the healthy reals each ring was last built from, so an unchanged VIP's
/// ring is not rebuilt (a reload costs only the VIPs it changes).
///
/// Ring ids start at `first_id` (1 for both families, as 0 is never a ring
/// in their VIP arrays, see [`proxy_common::XlbVipSlot`]; the tests also
/// use 0).
#[derive(Debug)]
pub(crate) struct Rings<K, A> {
    ids: HashMap<K, u32>,
    /// The next ring id never used.
    next: u32,
    free: Vec<u32>,
    built: HashMap<K, Vec<(A, u32)>>,
    first_id: u32,
}

impl<K, A> Rings<K, A> {
    /// No rings; ids start at `first_id`.
    pub(crate) fn new(first_id: u32) -> Self {
        Self {
            ids: HashMap::new(),
            next: 0,
            free: Vec::new(),
            built: HashMap::new(),
            first_id,
        }
    }
}

impl<K: Copy + Ord + Hash, A: Copy + Ord + Hash + Display> Rings<K, A> {
    /// The bookkeeping of rings an earlier run left: `ids` as its VIP table
    /// names them, `stored` the ids in its rings map. Ids no VIP uses are
    /// free (a ring left without its VIP is removed at the next
    /// [`Rings::remove_free`]); below `first_id` included, so such a ring
    /// is removed, never reused. Each ring is rebuilt at the next
    /// [`Rings::build`] (Maglev is deterministic).
    pub(crate) fn recover(first_id: u32, ids: HashMap<K, u32>, stored: &[u32]) -> Self {
        let referenced: HashSet<u32> = ids.values().copied().collect();
        let next = referenced
            .iter()
            .chain(stored.iter())
            .max()
            .map_or(first_id, |m| m + 1);
        let free = (0..next).filter(|r| !referenced.contains(r)).collect();
        Self {
            ids,
            next,
            free,
            built: HashMap::new(),
            first_id,
        }
    }

    /// The ring id of `key`, if it has one.
    pub(crate) fn id(&self, key: &K) -> Option<u32> {
        self.ids.get(key).copied()
    }

    /// Whether some entry uses ring `id`.
    pub(crate) fn uses(&self, id: u32) -> bool {
        self.ids.values().any(|r| *r == id)
    }

    /// Gives `key` ring `id`, a ring an earlier build wrote (see
    /// [`super::ExternalVips::adopt_v1`]): `id` is no longer free.
    pub(crate) fn adopt(&mut self, key: K, id: u32) {
        self.free.retain(|r| *r != id);
        self.next = self.next.max(id + 1);
        self.ids.insert(key, id);
    }

    /// A ring id never used (for a copy of a ring being adopted).
    pub(crate) fn fresh_id(&mut self) -> u32 {
        let id = self.next.max(self.first_id);
        self.next = id + 1;
        id
    }

    /// `key`'s ring id, a free one (never below `first_id`) or a new one
    /// when it has none.
    fn id_for(&mut self, key: K) -> u32 {
        if let Some(r) = self.ids.get(&key) {
            return *r;
        }
        let first = self.first_id;
        let r = match self.free.iter().rposition(|r| *r >= first) {
            Some(i) => self.free.remove(i),
            None => {
                self.next = self.next.max(first) + 1;
                self.next - 1
            }
        };
        self.ids.insert(key, r);
        r
    }

    /// Writes into `rings` (the map named `map_name`) the ring of each
    /// entry of `want` (key → its reals and weights) whose healthy reals
    /// (weight > 0, by address, each once) changed since it was last built:
    /// the one Maglev builder ([`proxy_common::maglev`]) keyed by the
    /// real's address text, slots mapped to `reals`' indexes, swapped in
    /// with one map update. An entry without a healthy real loses its ring
    /// (its packets are dropped and counted). Returns how many entries have
    /// no healthy real.
    ///
    /// Errors: the rings map refuses an update (`"{map_name} is full"`).
    pub(crate) fn build(
        &mut self,
        rings: &mut BpfHashMap<&mut MapData, u32, MaglevTable>,
        map_name: &str,
        want: &BTreeMap<K, &[(A, u32)]>,
        reals: &Reals<A>,
    ) -> anyhow::Result<usize> {
        let mut without_reals = 0;
        let mut table = Box::new(MaglevTable {
            slots: [0; MAGLEV_TABLE_SIZE as usize],
        });
        for (key, listed) in want {
            let ring = self.id_for(*key);
            let mut healthy: Vec<(A, u32)> =
                listed.iter().filter(|(_, w)| *w > 0).copied().collect();
            healthy.sort();
            healthy.dedup_by_key(|(a, _)| *a);
            if healthy.is_empty() {
                let _ = rings.remove(&ring);
                self.built.remove(key);
                without_reals += 1;
                continue;
            }
            if self.built.get(key) == Some(&healthy) {
                continue;
            }
            let perms: Vec<(u64, u64)> = healthy
                .iter()
                .map(|(a, _)| {
                    proxy_common::maglev::permutation(a.to_string().as_bytes(), MAGLEV_TABLE_SIZE)
                })
                .collect();
            let mut next = vec![0u64; healthy.len()];
            proxy_common::maglev::populate(&perms, |i| healthy[i].1, &mut next, &mut table.slots);
            for s in table.slots.iter_mut() {
                *s = reals.index[&healthy[*s as usize].0];
            }
            rings
                .insert(ring, table.as_ref(), 0)
                .with_context(|| format!("{map_name} is full"))?;
            self.built.insert(*key, healthy);
        }
        Ok(without_reals)
    }

    /// Drops the entries not in `want` (their ring ids become free) and
    /// returns their keys, for the caller to remove from its VIP table.
    pub(crate) fn remove_unwanted<V>(&mut self, want: &BTreeMap<K, V>) -> Vec<K> {
        let gone: Vec<K> = self
            .ids
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect();
        for k in &gone {
            self.built.remove(k);
            if let Some(r) = self.ids.remove(k) {
                self.free.push(r);
            }
        }
        gone
    }

    /// Removes the rings of free ids from `rings`; ids below `first_id`
    /// (an earlier build's) are then forgotten.
    pub(crate) fn remove_free(&mut self, rings: &mut BpfHashMap<&mut MapData, u32, MaglevTable>) {
        for r in &self.free {
            let _ = rings.remove(r);
        }
        let first = self.first_id;
        self.free.retain(|r| *r >= first);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Service `front.web.svc.cluster.local`, TCP port 80 on `vip`, with
    /// `nodes` (address, weight) and `unplaced` endpoints.
    pub(crate) fn service(vip: &str, nodes: &[(&str, u32)], unplaced: u32) -> ExternalL4Service {
        ExternalL4Service {
            host: "front.web.svc.cluster.local".into(),
            vip: vip.parse().unwrap(),
            port: 80,
            protocol: strait_config::snapshot::L4Protocol::Tcp,
            nodes: nodes
                .iter()
                .map(|(a, w)| (a.parse().unwrap(), *w))
                .collect(),
            unplaced,
        }
    }

    fn addr(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    #[test]
    fn new_reals_take_fresh_indexes_in_address_order_before_freed_ones() {
        let mut reals = Reals::default();
        let mut written = Vec::new();
        let listed: HashSet<_> = [addr(3), addr(1), addr(2)].into();
        reals
            .add(&listed, 4, "reals", |i, a| {
                written.push((i, a));
                Ok(())
            })
            .unwrap();
        assert_eq!(written, vec![(0, addr(1)), (1, addr(2)), (2, addr(3))]);
        let mut cleared = Vec::new();
        let keep: HashSet<_> = [addr(1), addr(3)].into();
        reals
            .remove_unlisted(&keep, |i| {
                cleared.push(i);
                Ok(())
            })
            .unwrap();
        assert_eq!(cleared, vec![1]);
        assert_eq!(reals.len(), 2);
        // Index 3 is fresh: taken before the freed 1; then 1 is reused.
        written.clear();
        let more: HashSet<_> = [addr(1), addr(3), addr(4), addr(5)].into();
        reals
            .add(&more, 4, "reals", |i, a| {
                written.push((i, a));
                Ok(())
            })
            .unwrap();
        assert_eq!(written, vec![(3, addr(4)), (1, addr(5))]);
        let full: HashSet<_> = [addr(1), addr(3), addr(4), addr(5), addr(6)].into();
        let err = reals
            .add(&full, 4, "IPv6 reals", |_, _| Ok(()))
            .unwrap_err();
        assert_eq!(err.to_string(), "more than 4 XDP balancer IPv6 reals");
    }

    #[test]
    fn recovered_reals_keep_their_indexes_and_holes_are_free() {
        let entries = [Some(addr(1)), None, Some(addr(2)), None];
        let mut reals = Reals::recover(entries.into_iter().map(Ok)).unwrap();
        assert_eq!(reals.len(), 2);
        let mut written = Vec::new();
        let listed: HashSet<_> = [addr(1), addr(2), addr(7), addr(8)].into();
        reals
            .add(&listed, 4, "reals", |i, a| {
                written.push((i, a));
                Ok(())
            })
            .unwrap();
        // 3 is fresh (past the highest used, 2); then the hole 1.
        assert_eq!(written, vec![(3, addr(7)), (1, addr(8))]);
    }

    #[test]
    fn ring_ids_start_at_first_id_and_a_recovered_ring_below_it_is_removed_not_reused() {
        let key = |p: u16| (p, 0u8);
        let mut rings: Rings<(u16, u8), Ipv4Addr> =
            Rings::recover(1, HashMap::from([(key(80), 2)]), &[0, 2]);
        assert_eq!(rings.id(&key(80)), Some(2));
        assert!(rings.uses(2) && !rings.uses(0));
        // Free: 0 and 1; 1 is reused, 0 never is.
        assert_eq!(rings.id_for(key(81)), 1);
        assert_eq!(rings.id_for(key(82)), 3);
        assert_eq!(rings.id_for(key(81)), 1, "an entry keeps its id");
        let want: BTreeMap<(u16, u8), ()> = [(key(80), ()), (key(82), ())].into();
        assert_eq!(rings.remove_unwanted(&want), vec![key(81)]);
        assert_eq!(rings.id(&key(81)), None);
        assert_eq!(rings.id_for(key(83)), 1, "a removed entry's id is free");

        let mut v6: Rings<(u16, u8), Ipv4Addr> = Rings::new(0);
        assert_eq!(v6.id_for(key(80)), 0);
        assert_eq!(v6.id_for(key(81)), 1);
        let mut v4: Rings<(u16, u8), Ipv4Addr> = Rings::new(1);
        assert_eq!(v4.id_for(key(80)), 1);
        assert_eq!(v4.fresh_id(), 2);
    }

    #[test]
    fn wanted_refuses_a_key_listed_twice_and_more_entries_than_the_table_holds() {
        // Items: (address, port, reals).
        type Item = (u8, u16, Vec<(Ipv4Addr, u32)>);
        let want = |items: &[Item], max| {
            wanted(
                items,
                |(a, p, r): &Item| ((*a, *p), &r[..]),
                |(a, _)| *a,
                max,
                "IPv6 ",
                |(a, p, _)| format!("{a}:{p} is listed twice"),
            )
            .map(|w| (w.entries.len(), w.addrs.len(), w.listed))
        };
        let items = vec![
            (1, 80, vec![(addr(1), 1), (addr(2), 0)]),
            (1, 443, vec![(addr(2), 1)]),
            (2, 80, vec![]),
        ];
        let (entries, addrs, listed) = want(&items, 5).unwrap();
        assert_eq!((entries, addrs), (3, 2));
        assert_eq!(listed, HashSet::from([addr(1), addr(2)]));
        let err = want(&items, 4).err().unwrap();
        assert_eq!(
            err.to_string(),
            "3 external IPv6 VIP ports on 2 addresses exceed the XDP balancer's 4 entries"
        );
        let mut twice = items.clone();
        twice.push((1, 443, vec![]));
        assert_eq!(
            want(&twice, 100).err().unwrap().to_string(),
            "1:443 is listed twice"
        );
    }

    #[test]
    fn family_entries_keep_one_family_and_count_endpoints_left_out() {
        let svc = service;
        let services = [
            svc("2001:db8::7", &[("fd00::11", 1)], 0),
            svc("198.51.100.7", &[("192.168.0.11", 2), ("fd00::12", 1)], 3),
        ];
        let v4 = |a| match a {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        };
        let got: Vec<_> = family_entries(&services, v4, v4)
            .map(|(s, vip, reals, unplaced)| (s.port, vip, reals, unplaced))
            .collect();
        assert_eq!(
            got,
            vec![(
                80,
                Ipv4Addr::new(198, 51, 100, 7),
                vec![(Ipv4Addr::new(192, 168, 0, 11), 2)],
                4
            )]
        );
    }
}
