//! The IPv4 deny filter's DIR-16-8 table from userspace
//! ([`proxy_common::deny4`]): which kind each `DENY_V4_SLASH16` entry gets
//! (a leaf verdict, a `DENY_V4_DIR24` block, or the length path), and the
//! blocks' allocation, filling and reuse. [`super::xdp::DenyTries`] owns the
//! level-1 entries and calls [`Direct4::plan`] / [`Direct4::place`].
use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use aya::maps::{Array, MapData};
use proxy_common::{
    deny4_kind, deny_v4_direct_entry, deny_v4_leaf_payload, DENY_V4_BLOCKS, DENY_V4_BLOCK_SLOTS,
    DENY_V4_DIR24_BY_LENGTH, DENY_V4_DIR24_LEAF, DENY_V4_KIND_SHIFT, DENY_V4_PAYLOAD_SHIFT,
};

/// What one /16 should be decided by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Want16 {
    /// Every prefix overlapping the /16 contains it: the longest one's value.
    Leaf(u32),
    /// A block with these non-zero /24 slots (`DENY_V4_DIR24` encoding).
    Block(BTreeMap<u8, u32>),
}

/// The /16 decisions of a set of IPv4 prefixes (host-order address with
/// host bits cleared, length 0–32, deny value): an entry for every /16
/// some prefix overlaps.
pub(super) fn plan(prefixes: &[(u32, u8, u32)]) -> HashMap<u32, Want16> {
    let mut short: Vec<&(u32, u8, u32)> = prefixes.iter().filter(|p| p.1 <= 16).collect();
    short.sort_by_key(|p| p.1);
    // The longest prefix of 0–16 bits containing each /16: painted
    // shortest first, so longer ones overwrite.
    let mut cover: HashMap<u32, u32> = HashMap::new();
    for &&(addr, len, value) in &short {
        let first = addr >> 16;
        for i in first..first + (1u32 << (16 - len)) {
            cover.insert(i, value);
        }
    }
    let mut long: HashMap<u32, Vec<(u32, u8, u32)>> = HashMap::new();
    for &p in prefixes.iter().filter(|p| p.1 > 16) {
        long.entry(p.0 >> 16).or_default().push(p);
    }
    let mut out: HashMap<u32, Want16> = cover.iter().map(|(i, v)| (*i, Want16::Leaf(*v))).collect();
    for (i, mut list) in long {
        let base = cover.get(&i).map_or(0, |v| v | DENY_V4_DIR24_LEAF);
        let mut slots = [base; DENY_V4_BLOCK_SLOTS as usize];
        list.sort_by_key(|p| p.1);
        for (addr, len, value) in list {
            let first = ((addr >> 8) & 0xff) as usize;
            if len <= 24 {
                let n = 1usize << (24 - len);
                slots[first..first + n].fill(value | DENY_V4_DIR24_LEAF);
            } else {
                slots[first] = DENY_V4_DIR24_BY_LENGTH;
            }
        }
        let block = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| **s != 0)
            .map(|(j, s)| (j as u8, *s))
            .collect();
        out.insert(i, Want16::Block(block));
    }
    out
}

/// The `DENY_V4_DIR24` blocks: which /16 holds which, what each holds, and
/// which are free.
pub(super) struct Direct4 {
    dir24: Array<MapData, u32>,
    /// /16 → its block.
    owner: HashMap<u32, u32>,
    /// Per block: its non-zero slots as written; `None` when unknown (a
    /// pinned map of an earlier run: every slot is written on next use).
    content: Vec<Option<BTreeMap<u8, u32>>>,
    /// Blocks no entry names, safe to reuse.
    free: Vec<u32>,
    /// Blocks no entry names any more, which a program that read the old
    /// entry may still read: reused after an RCU grace period.
    cooling: Vec<u32>,
}

impl Direct4 {
    /// Over `dir24` as created with the object (all zero, no block used).
    pub(super) fn new(dir24: Array<MapData, u32>) -> Self {
        Self {
            dir24,
            owner: HashMap::new(),
            content: vec![Some(BTreeMap::new()); DENY_V4_BLOCKS as usize],
            free: (0..DENY_V4_BLOCKS).rev().collect(),
            cooling: Vec::new(),
        }
    }

    /// Adopts the blocks pinned `DENY_V4_SLASH16` entries name (`entries`:
    /// /16 → entry, as read): their contents unknown (rewritten whole on
    /// the next change), every other block cooling. Returns the entries
    /// that name no valid block (out of range, or a block another entry
    /// names), to be rewritten as the length path.
    pub(super) fn recover(&mut self, entries: &HashMap<u32, u64>) -> Vec<u32> {
        self.owner.clear();
        let mut bad = Vec::new();
        let mut taken = vec![false; DENY_V4_BLOCKS as usize];
        let mut sorted: Vec<(&u32, &u64)> = entries.iter().collect();
        sorted.sort();
        for (&i, &e) in sorted {
            if e >> DENY_V4_KIND_SHIFT != deny4_kind::BLOCK {
                continue;
            }
            let b = (e >> DENY_V4_PAYLOAD_SHIFT) as u32 & 0xffff;
            if b >= DENY_V4_BLOCKS || taken[b as usize] {
                bad.push(i);
                continue;
            }
            taken[b as usize] = true;
            self.owner.insert(i, b);
        }
        self.content = vec![None; DENY_V4_BLOCKS as usize];
        self.free.clear();
        self.cooling = (0..DENY_V4_BLOCKS)
            .rev()
            .filter(|b| !taken[*b as usize])
            .collect();
        bad
    }

    /// The level-1 entry /16 `i` gets for `want` over its length `summary`,
    /// its block filled first. A block named by an entry is never written:
    /// changed contents go to another block (copy on write), the old one
    /// cools once the entry is rewritten ([`Direct4::written`]). A leaf
    /// whose value does not fit, or a block when none is free, is the
    /// length path (exact, slower).
    ///
    /// Errors: a `DENY_V4_DIR24` write refused.
    pub(super) fn place(
        &mut self,
        i: u32,
        summary: u64,
        want: Option<&Want16>,
    ) -> anyhow::Result<u64> {
        let entry = match want {
            _ if summary == 0 => 0,
            Some(Want16::Leaf(v)) => match deny_v4_leaf_payload(*v) {
                Some(p) => deny_v4_direct_entry(summary, deny4_kind::LEAF, p),
                None => deny_v4_direct_entry(summary, deny4_kind::BY_LENGTH, 0),
            },
            Some(Want16::Block(slots)) => match self.block_for(i, slots) {
                Some(b) => {
                    self.fill(b, slots)?;
                    deny_v4_direct_entry(summary, deny4_kind::BLOCK, b as u16)
                }
                None => deny_v4_direct_entry(summary, deny4_kind::BY_LENGTH, 0),
            },
            None => deny_v4_direct_entry(summary, deny4_kind::BY_LENGTH, 0),
        };
        Ok(entry)
    }

    /// After /16 `i`'s entry `entry` is written: a block it no longer names
    /// starts cooling.
    pub(super) fn written(&mut self, i: u32, entry: u64) {
        let names = entry >> DENY_V4_KIND_SHIFT == deny4_kind::BLOCK;
        if let Some(&b) = self.owner.get(&i) {
            if !names || (entry >> DENY_V4_PAYLOAD_SHIFT) as u32 & 0xffff != b {
                self.owner.remove(&i);
                self.cooling.push(b);
            }
        }
        if names {
            self.owner
                .insert(i, (entry >> DENY_V4_PAYLOAD_SHIFT) as u32 & 0xffff);
        }
    }

    /// After an RCU grace period that began once the entries naming the
    /// cooling blocks were rewritten: they are free to reuse.
    pub(super) fn after_grace(&mut self) {
        self.free.append(&mut self.cooling);
    }

    /// Blocks in use.
    pub(super) fn used(&self) -> usize {
        self.owner.len()
    }

    /// /16 `i`'s block for `slots`: its own when it holds them already,
    /// else a free one, or a cooling one after a grace period; `None` when
    /// all are in use (or the grace period cannot be waited for).
    fn block_for(&mut self, i: u32, slots: &BTreeMap<u8, u32>) -> Option<u32> {
        if let Some(&b) = self.owner.get(&i) {
            if self.content[b as usize].as_ref() == Some(slots) {
                return Some(b);
            }
        }
        if self.free.is_empty() && !self.cooling.is_empty() && super::grace::rcu_grace_period() {
            self.free.append(&mut self.cooling);
        }
        let b = self.free.pop();
        if b.is_none() {
            tracing::warn!(
                blocks = DENY_V4_BLOCKS,
                "every DENY_V4_DIR24 block is in use: IPv4 deny sources in further /16s with prefixes longer than /16 are looked up by length (exact, slower)"
            );
        }
        b
    }

    /// Makes block `b`, which no entry names, hold `slots` (writing only the
    /// slots that differ from what it is known to hold, every slot when
    /// unknown); a no-op for a block already holding them.
    fn fill(&mut self, b: u32, slots: &BTreeMap<u8, u32>) -> anyhow::Result<()> {
        let base = b * DENY_V4_BLOCK_SLOTS;
        match self.content[b as usize].take() {
            Some(old) => {
                for (j, v) in slots {
                    if old.get(j) != Some(v) {
                        self.dir24.set(base + *j as u32, *v, 0)?;
                    }
                }
                for j in old.keys().filter(|j| !slots.contains_key(j)) {
                    self.dir24.set(base + *j as u32, 0, 0)?;
                }
            }
            None => {
                for j in 0..DENY_V4_BLOCK_SLOTS {
                    let v = slots.get(&(j as u8)).copied().unwrap_or(0);
                    self.dir24
                        .set(base + j, v, 0)
                        .context("writing DENY_V4_DIR24")?;
                }
            }
        }
        self.content[b as usize] = Some(slots.clone());
        Ok(())
    }
}

/// Rewrites `DENY_V4_SLASH16` entry `i` from `old` to `new` so that a
/// program reading it while the kernel copies the word (byte by byte, with
/// `rep movsb`, on CPUs with fast short moves) sees a complete old or new
/// answer: the kind (the top two bits, in the byte that also holds the
/// longest length) leaves a leaf or a block alone in one write, the
/// lengths and payload change while the kind is the length path (which
/// ignores the payload), and the new kind comes last, alone.
///
/// Errors: an update refused.
pub(super) fn publish(
    slash16: &mut Array<MapData, u64>,
    i: u32,
    old: u64,
    new: u64,
) -> anyhow::Result<()> {
    if old == new {
        return Ok(());
    }
    let kind = 3u64 << DENY_V4_KIND_SHIFT;
    let mut cur = old;
    if cur & kind != 0 {
        cur &= !kind;
        slash16.set(i, cur, 0)?;
    }
    let mid = new & !kind;
    if mid != cur {
        slash16.set(i, mid, 0)?;
    }
    if new != mid {
        slash16.set(i, new, 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
    }

    #[test]
    fn the_plan_pushes_the_longest_prefix_down_to_each_slash16_and_slash24() {
        let p = plan(&[
            (v4("10.0.0.0"), 8, 1),
            (v4("10.1.0.0"), 16, 2),
            (v4("10.1.2.0"), 23, 3),
            (v4("10.1.3.0"), 24, 4),
            (v4("10.1.9.128"), 25, 5),
            (v4("192.0.2.0"), 24, 6),
        ]);
        // 256 /16s under the /8 plus 192.0.
        assert_eq!(p.len(), 257);
        assert_eq!(p[&(v4("10.200.0.0") >> 16)], Want16::Leaf(1));
        let Want16::Block(b) = &p[&(v4("10.1.0.0") >> 16)] else {
            panic!("10.1/16 needs a block")
        };
        assert_eq!(b.len(), 256);
        assert_eq!(b[&0], 2 | DENY_V4_DIR24_LEAF);
        assert_eq!(b[&2], 3 | DENY_V4_DIR24_LEAF);
        assert_eq!(b[&3], 4 | DENY_V4_DIR24_LEAF);
        assert_eq!(b[&9], DENY_V4_DIR24_BY_LENGTH);
        let Want16::Block(b) = &p[&(v4("192.0.0.0") >> 16)] else {
            panic!("192.0/16 needs a block")
        };
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            [(&2, &(6 | DENY_V4_DIR24_LEAF))]
        );
        let all = plan(&[(0, 0, 9)]);
        assert_eq!(all.len(), 65_536);
    }
}
