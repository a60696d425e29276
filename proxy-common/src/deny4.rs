//! The IPv4 side of the XDP deny filter's direct lookups: a DIR-16-8
//! table (the longest prefix pushed down to every /16, then to every /24
//! of the /16s that need it, as in DIR-24-8 routing tables and DPDK's
//! `rte_lpm`) that decides most IPv4 sources with one or two array loads
//! and no hash lookup.
//!
//! Level 1 is [`crate::DENY_V4_SLASH16`] (65,536 `u64`, one per /16, top
//! 16 bits of the source in host order). Its bits 0–32 and 56–61 are the
//! length summary earlier builds wrote and read (which lengths overlap the
//! /16, the longest of them: the "by length" path, one
//! [`crate::DENY_V4_LEN`] hash lookup per length). This build adds a kind
//! in bits 62–63 ([`DENY_V4_KIND_SHIFT`]) and a 16-bit payload in bits
//! 40–55 ([`DENY_V4_PAYLOAD_SHIFT`]), which earlier builds' programs mask
//! off (so either build's program reads either build's entries correctly):
//!
//! - [`deny4_kind::BY_LENGTH`] (0): the length path, as before (what an
//!   earlier daemon wrote, and the fallback when no block is free);
//! - [`deny4_kind::LEAF`]: every prefix overlapping the /16 contains it;
//!   the payload is the longest one's value ([`deny_v4_leaf_payload`]):
//!   decided by one array load;
//! - [`deny4_kind::BLOCK`]: the payload is a block of [`DENY_V4_DIR24`]
//!   (256 `u32`, one per /24 of the /16): 0 — no prefix contains the /24;
//!   [`DENY_V4_DIR24_LEAF`]` | value` — the longest prefix containing it;
//!   [`DENY_V4_DIR24_BY_LENGTH`] — the /24 holds a prefix longer than 24
//!   bits: the length path decides. Two array loads.
//!
//! Updates: every entry is one aligned word whose old and new contents are
//! each a complete answer for the addresses under it; a block is filled
//! before the level-1 entry that names it is written, and a block no entry
//! names any more is reused only after an RCU grace period (a program that
//! read the old level-1 entry may still read it), so a packet sees the old
//! verdict or the new one, never a mix.

/// Level 2 of the IPv4 DIR-16-8 table: array of
/// [`DENY_V4_DIR24_ENTRIES`] `u32`, [`DENY_V4_BLOCKS`] blocks of
/// [`DENY_V4_BLOCK_SLOTS`], block `b` slot `j` at `b * 256 + j` (`j`: bits
/// 15..8 of the source, host order).
pub const DENY_V4_DIR24: &str = "DENY_V4_DIR24";
/// Slots of one [`DENY_V4_DIR24`] block: one per /24 of a /16.
pub const DENY_V4_BLOCK_SLOTS: u32 = 256;
/// Blocks in [`DENY_V4_DIR24`]: at most this many /16s hold a prefix
/// longer than 16 bits and are decided in two loads; the others fall back
/// to the length path (correct, a hash lookup per length).
pub const DENY_V4_BLOCKS: u32 = 1024;
/// Entries of [`DENY_V4_DIR24`] (1 MiB of kernel memory).
pub const DENY_V4_DIR24_ENTRIES: u32 = DENY_V4_BLOCKS * DENY_V4_BLOCK_SLOTS;

/// A [`DENY_V4_DIR24`] slot holding a verdict: the longest prefix
/// containing the /24 has value `slot & !DENY_V4_DIR24_LEAF`.
pub const DENY_V4_DIR24_LEAF: u32 = 1 << 30;
/// A [`DENY_V4_DIR24`] slot whose /24 holds a prefix longer than 24 bits:
/// the length path decides.
pub const DENY_V4_DIR24_BY_LENGTH: u32 = 1 << 29;

/// Shift of the kind ([`deny4_kind`]) in a [`crate::DENY_V4_SLASH16`] entry.
pub const DENY_V4_KIND_SHIFT: u32 = 62;
/// Shift of the 16-bit payload in a [`crate::DENY_V4_SLASH16`] entry.
pub const DENY_V4_PAYLOAD_SHIFT: u32 = 40;
/// The kind and payload bits of a [`crate::DENY_V4_SLASH16`] entry (the
/// rest is the length summary).
pub const DENY_V4_DIRECT_MASK: u64 = 3 << DENY_V4_KIND_SHIFT | 0xffff << DENY_V4_PAYLOAD_SHIFT;

/// Kinds of a [`crate::DENY_V4_SLASH16`] entry.
pub mod deny4_kind {
    /// Look the entry's lengths up in `DENY_V4_LEN` (earlier builds' only
    /// kind).
    pub const BY_LENGTH: u64 = 0;
    /// The payload is the verdict ([`super::deny_v4_payload_value`]).
    pub const LEAF: u64 = 1;
    /// The payload is a [`super::DENY_V4_DIR24`] block.
    pub const BLOCK: u64 = 2;
}

/// A [`crate::DENY_V4_SLASH16`] entry: `summary` (lengths and longest) with
/// kind `kind` and `payload`.
pub const fn deny_v4_direct_entry(summary: u64, kind: u64, payload: u16) -> u64 {
    (summary & !DENY_V4_DIRECT_MASK)
        | (kind & 3) << DENY_V4_KIND_SHIFT
        | (payload as u64) << DENY_V4_PAYLOAD_SHIFT
}

/// The 16-bit payload of a [`deny4_kind::LEAF`] entry for deny value
/// `value` (counter index below 2^14, [`crate::DENY_SCOPED`] as bit 15).
/// `None` when the index does not fit.
pub const fn deny_v4_leaf_payload(value: u32) -> Option<u16> {
    let index = value & !crate::DENY_SCOPED;
    if index >= 1 << 14 {
        return None;
    }
    Some(
        index as u16
            | if value & crate::DENY_SCOPED != 0 {
                0x8000
            } else {
                0
            },
    )
}

/// The deny value of a [`deny4_kind::LEAF`] payload (the inverse of
/// [`deny_v4_leaf_payload`]).
#[inline(always)]
pub const fn deny_v4_payload_value(payload: u32) -> u32 {
    (payload & 0x3fff) | (payload & 0x8000) << 16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DENY_SCOPED, DENY_SLASH16_LONGEST_SHIFT, MAX_DENY_PREFIXES};

    #[test]
    fn payloads_round_trip_every_value_and_leave_the_summary_alone() {
        for v in [0, 1, MAX_DENY_PREFIXES - 1] {
            for value in [v, v | DENY_SCOPED] {
                let p = deny_v4_leaf_payload(value).unwrap();
                assert_eq!(deny_v4_payload_value(p as u32), value);
            }
        }
        assert_eq!(deny_v4_leaf_payload(1 << 14), None);
        // Lengths 0..=32 and the longest (6 bits at 56) are kept; the
        // direct bits replace the old ones.
        let summary = ((1u64 << 33) - 1) | (32 << DENY_SLASH16_LONGEST_SHIFT);
        let e = deny_v4_direct_entry(summary, deny4_kind::BLOCK, 0xffff);
        assert_eq!(e & !DENY_V4_DIRECT_MASK, summary);
        assert_eq!(e >> DENY_V4_KIND_SHIFT, deny4_kind::BLOCK);
        assert_eq!((e >> DENY_V4_PAYLOAD_SHIFT) & 0xffff, 0xffff);
        let e = deny_v4_direct_entry(e, deny4_kind::LEAF, 7);
        assert_eq!(e >> DENY_V4_KIND_SHIFT, deny4_kind::LEAF);
        assert_eq!((e >> DENY_V4_PAYLOAD_SHIFT) & 0xffff, 7);
        // An earlier build's reading: lengths masked to 33 bits, longest
        // to 6 bits at 56.
        assert_eq!(e & ((1 << 33) - 1), (1 << 33) - 1);
        assert_eq!((e >> DENY_SLASH16_LONGEST_SHIFT) & 63, 32);
        // Slot flags stay clear of any value.
        assert_eq!(
            (MAX_DENY_PREFIXES - 1) & (DENY_V4_DIR24_LEAF | DENY_V4_DIR24_BY_LENGTH),
            0
        );
    }
}
