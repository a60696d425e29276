//! The bookkeeping of `INPOD_V6` (a captured pod's IPv6 address → its
//! pod key, which `inpod_lookup` reads once per IPv6 connection before the
//! pod's `INPOD_MODES`): which pod claims which address, and the writes
//! that take the map there in a fail-closed order. An address missing from
//! the map passes untouched (the pod's STRICT ports would accept plain
//! text), so an address that some pod claims before and after an update is
//! never removed, not even for a moment: entries are added or re-pointed
//! first, while the pods are synced one by one ([`V6Book::claim`]), and
//! removed last, once every pod is synced and only if no pod claims them
//! any more ([`V6Book::sweep`]) — the order of the deny and `INPOD_MODES`
//! syncs (`super::grace`). No grace period is needed before a removal: a
//! lookup reads this map once, so it sees the entry or its absence, both
//! states the update passes through anyway.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

/// One write to `INPOD_V6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V6Write {
    /// Point the address at the pod key (insert, or replace in place).
    Set(Ipv6Addr, Ipv4Addr),
    /// Remove the address's entry.
    Remove(Ipv6Addr),
}

/// What `INPOD_V6` holds and which pod (by pod key) claims which IPv6
/// addresses.
#[derive(Debug, Default)]
pub struct V6Book {
    /// Address → pod key, as the map holds it.
    map: BTreeMap<Ipv6Addr, Ipv4Addr>,
    /// Pod key → the addresses it claims.
    claims: BTreeMap<Ipv4Addr, Vec<Ipv6Addr>>,
}

impl V6Book {
    /// Pod `key` claims exactly `v6` from now on. Returns the writes that
    /// point every address of `v6` at `key` now (new ones, and ones the map
    /// gives another pod); nothing is removed here (see [`Self::sweep`]).
    pub fn claim(&mut self, key: Ipv4Addr, v6: &[Ipv6Addr]) -> Vec<V6Write> {
        if v6.is_empty() {
            self.claims.remove(&key);
        } else {
            self.claims.insert(key, v6.to_vec());
        }
        let mut out = Vec::new();
        for a in v6 {
            if self.map.insert(*a, key) != Some(key) {
                out.push(V6Write::Set(*a, key));
            }
        }
        out
    }

    /// Pod `key` claims nothing any more (its entries stay until
    /// [`Self::sweep`]).
    pub fn forget(&mut self, key: Ipv4Addr) {
        self.claims.remove(&key);
    }

    /// The writes that leave the map holding exactly the claimed
    /// addresses: an address whose pod no longer claims it but another
    /// does is re-pointed at that pod (the lowest key, when several claim
    /// it), then the addresses no pod claims are removed.
    pub fn sweep(&mut self) -> Vec<V6Write> {
        let mut claimed: BTreeMap<Ipv6Addr, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for (key, v6) in &self.claims {
            for a in v6 {
                claimed.entry(*a).or_default().insert(*key);
            }
        }
        let mut out = Vec::new();
        for (a, keys) in &claimed {
            let have = self.map.get(a);
            if !have.is_some_and(|k| keys.contains(k)) {
                let key = *keys.first().expect("a claimed address has a claimer");
                self.map.insert(*a, key);
                out.push(V6Write::Set(*a, key));
            }
        }
        let gone: Vec<Ipv6Addr> = self
            .map
            .keys()
            .filter(|a| !claimed.contains_key(a))
            .copied()
            .collect();
        for a in gone {
            self.map.remove(&a);
            out.push(V6Write::Remove(a));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pods = BTreeMap<Ipv4Addr, Vec<Ipv6Addr>>;

    fn a(n: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n)
    }

    fn k(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    /// One sync as `daemon/inbound.rs` runs it: the pods that left are
    /// forgotten, each pod that stays or comes claims its addresses (in key
    /// order, as the sync walks its map), then the sweep. Returns the map
    /// after each write.
    fn sync(
        book: &mut V6Book,
        map: &mut BTreeMap<Ipv6Addr, Ipv4Addr>,
        to: &Pods,
    ) -> Vec<BTreeMap<Ipv6Addr, Ipv4Addr>> {
        let gone: Vec<Ipv4Addr> = book
            .claims
            .keys()
            .filter(|key| !to.contains_key(key))
            .copied()
            .collect();
        for key in gone {
            book.forget(key);
        }
        let mut writes = Vec::new();
        for (key, v6) in to {
            writes.extend(book.claim(*key, v6));
        }
        writes.extend(book.sweep());
        let mut states = vec![map.clone()];
        for w in writes {
            match w {
                V6Write::Set(a, key) => {
                    map.insert(a, key);
                }
                V6Write::Remove(a) => {
                    map.remove(&a);
                }
            }
            states.push(map.clone());
        }
        states
    }

    /// Between any two sets of pods — addresses added, dropped, moved
    /// from a pod that stays to another (before or after it in key order),
    /// pods gone and come — every address that some pod claims before and
    /// after is in the map at every step (pointing at its old pod or its
    /// new one), and the map ends as exactly the new claims.
    #[test]
    fn an_address_claimed_before_and_after_a_sync_is_never_missing() {
        let sets: Vec<Pods> = vec![
            Pods::new(),
            [(k(1), vec![a(1)])].into(),
            [(k(1), vec![a(1), a(2)])].into(),
            [(k(1), vec![a(2)]), (k(2), vec![a(1)])].into(),
            [(k(1), vec![a(1)]), (k(2), vec![a(2)])].into(),
            [(k(2), vec![a(1), a(2)])].into(),
            [(k(3), vec![a(1)]), (k(2), vec![a(3)])].into(),
            [(k(1), vec![a(3)]), (k(3), vec![a(2), a(1)])].into(),
        ];
        for from in &sets {
            for to in &sets {
                let mut book = V6Book::default();
                let mut map = BTreeMap::new();
                sync(&mut book, &mut map, from);
                let owner = |pods: &Pods, x: &Ipv6Addr| -> BTreeSet<Ipv4Addr> {
                    pods.iter()
                        .filter(|(_, v6)| v6.contains(x))
                        .map(|(key, _)| *key)
                        .collect()
                };
                let states = sync(&mut book, &mut map, to);
                for x in (1..=3).map(a) {
                    let (before, after) = (owner(from, &x), owner(to, &x));
                    if before.is_empty() || after.is_empty() {
                        continue;
                    }
                    for (i, s) in states.iter().enumerate() {
                        let key = s.get(&x);
                        assert!(
                            key.is_some_and(|key| before.contains(key) || after.contains(key)),
                            "{from:?} -> {to:?}: {x} is {key:?} after write {i}"
                        );
                    }
                }
                let want: BTreeMap<Ipv6Addr, Ipv4Addr> = (1..=3)
                    .map(a)
                    .filter_map(|x| owner(to, &x).first().map(|key| (x, *key)))
                    .collect();
                let end = states.last().unwrap();
                assert_eq!(
                    end.keys().collect::<Vec<_>>(),
                    want.keys().collect::<Vec<_>>(),
                    "{from:?} -> {to:?}"
                );
                for (x, key) in end {
                    assert!(
                        owner(to, x).contains(key),
                        "{from:?} -> {to:?}: {x} is {key}"
                    );
                }
                // A second sync with nothing changed writes nothing.
                assert_eq!(sync(&mut book, &mut map, to).len(), 1, "{from:?} -> {to:?}");
            }
        }
    }

    /// The bug the order fixes: an address that moves from a pod that
    /// stays to a pod synced before it was re-pointed by its new pod, then
    /// removed by the old one, and stayed missing (its STRICT ports open).
    #[test]
    fn an_address_taken_over_by_a_pod_synced_first_stays_in_the_map() {
        let mut book = V6Book::default();
        assert_eq!(book.claim(k(2), &[a(1)]), vec![V6Write::Set(a(1), k(2))]);
        assert_eq!(book.sweep(), vec![]);
        // The next sync: a(1) is k(1)'s now, and k(1) comes first.
        assert_eq!(book.claim(k(1), &[a(1)]), vec![V6Write::Set(a(1), k(1))]);
        assert_eq!(book.claim(k(2), &[a(2)]), vec![V6Write::Set(a(2), k(2))]);
        assert_eq!(book.sweep(), vec![]);
        assert_eq!(book.map, [(a(1), k(1)), (a(2), k(2))].into());
    }
}
