//! The IPv6 side of the XDP deny filter's exact-length lookups: the maps
//! that let `xdp_deny` decide an IPv6 source without walking the
//! [`crate::DENY_V6`] LPM trie, the way IPv4 sources are decided from
//! [`crate::DENY_V4_SLASH16`] and [`crate::DENY_V4_LEN`].
//!
//! A source (its leading 64 bits `hi`, host order) reads three entries of
//! [`DENY_V6_LENGTHS`] ([`deny_v6_length_entries`]): the lengths 48–128 of
//! the prefixes whose /48 hashes like the source's, the lengths 32–47 of
//! those whose /32 does, and the lengths 0–31 of those overlapping its
//! /16. All three 0 (most traffic): no prefix contains the source, passed
//! after three array loads. Otherwise the lengths are tried longest first,
//! one [`DENY_V6_LEN`] hash lookup each with a key built from the source's
//! two 64-bit words ([`DenyV6Key`]); the first hit is the longest prefix
//! containing the source. Past [`DENY_V6_MAX_HASHED_LENGTHS`] lookups, or
//! where an entry lists more lengths than it holds
//! ([`DENY_V6_LIST_MORE`]), the trie answers (it holds every prefix, so
//! nothing is skipped). Cilium's prefilter and Katran's per-length LPM
//! alternatives make the same trade.

/// IPv6 deny prefixes by exact (prefix length, masked address):
/// [`DenyV6Key`] → `u32`, the same value as in [`crate::DENY_V6`] (the
/// counter index in [`crate::DENY_STATS`], with [`crate::DENY_SCOPED`]
/// for a scoped prefix) (hash, not preallocated, [`crate::MAX_DENY_PREFIXES`]
/// entries).
pub const DENY_V6_LEN: &str = "DENY_V6_LEN";

/// Which IPv6 prefix lengths a source may match: array of
/// [`DENY_V6_LENGTHS_ENTRIES`] `u64` length lists
/// ([`deny_v6_length_list`]). Entries `0..65,536`: by the source's top 16
/// bits, the lengths 0–31 of the prefixes overlapping that /16 (a /10
/// lists its length in 64 entries). Then [`DENY_V6_LENGTHS_HASHED`]
/// entries by [`deny_v6_length_hash`] of the leading 32 bits: lengths
/// 32–47 of the prefixes whose /32 hashes there; then as many by the hash
/// of the leading 48 bits: lengths 48–128. A hash collision only adds a
/// length to try (a lookup that misses). Userspace writes the union of the
/// old and new lists before the entries that need them and the exact list
/// after, so a list never hides a prefix. Used when
/// [`crate::DenyConfig::v6_mode`] is [`crate::deny_mode::BY_LENGTH6`].
pub const DENY_V6_LENGTHS: &str = "DENY_V6_LENGTHS";

/// Entries of the /16 part of [`DENY_V6_LENGTHS`] (one per /16).
pub const DENY_V6_LENGTHS_DIRECT: u32 = 1 << 16;
/// Entries of each hashed part (/32, /48) of [`DENY_V6_LENGTHS`].
pub const DENY_V6_LENGTHS_HASHED: u32 = 1 << 16;
/// Entries of [`DENY_V6_LENGTHS`]: the /16 part, then the /32 part, then
/// the /48 part (1.5 MiB of kernel memory).
pub const DENY_V6_LENGTHS_ENTRIES: u32 = DENY_V6_LENGTHS_DIRECT + 2 * DENY_V6_LENGTHS_HASHED;

/// Lengths one [`DENY_V6_LENGTHS`] entry holds: one per byte.
pub const DENY_V6_LIST_SLOTS: usize = 8;
/// A byte of a length list meaning "more lengths than the entry holds":
/// the program asks the trie from there on.
pub const DENY_V6_LIST_MORE: u8 = 0xff;
/// At most this many [`DENY_V6_LEN`] lookups per source; lengths left
/// after them are decided by the trie (a lookup costs about what a third
/// of a 128-bit trie walk does).
pub const DENY_V6_MAX_HASHED_LENGTHS: u32 = 4;

/// The name the /16 + hashed /32 + hashed /48 "maybe" bitmap of earlier
/// builds was pinned under (array of 33,792 `u64`). This build does not
/// use it: a daemon starting over such a pin unpins it (its length lists
/// are rebuilt from the [`crate::DENY_V6`] trie).
pub const DENY_V6_SUMMARY_V1: &str = "DENY_V6_SUMMARY";

/// Key of [`DENY_V6_LEN`]: the prefix as two host-order 64-bit words with
/// the bits past `prefix_len` cleared (so the program builds it from the
/// packet's two 64-bit loads, byte-swapped and masked).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct DenyV6Key {
    /// Bits 127..64 of the masked address (`(u128::from(addr) >> 64) as u64`).
    pub hi: u64,
    /// Bits 63..0 of the masked address.
    pub lo: u64,
    /// Prefix length, 0–128.
    pub prefix_len: u32,
    /// Always 0.
    pub pad: u32,
}

impl DenyV6Key {
    /// The key of prefix `addr`/`len` (`addr` as `u128::from(Ipv6Addr)`,
    /// host bits cleared here; `len` over 128 counts as 128).
    pub const fn new(addr: u128, len: u32) -> Self {
        let len = if len > 128 { 128 } else { len };
        let (mhi, mlo) = deny_v6_masks(len);
        Self {
            hi: (addr >> 64) as u64 & mhi,
            lo: addr as u64 & mlo,
            prefix_len: len,
            pad: 0,
        }
    }
}

/// The masks of the high and low 64-bit words of a /`len` prefix
/// (`len` ≤ 128), without a shift by 64 or more.
#[inline(always)]
pub const fn deny_v6_masks(len: u32) -> (u64, u64) {
    let hi = if len >= 64 {
        u64::MAX
    } else {
        !(u64::MAX >> len)
    };
    let lo = if len <= 64 {
        0
    } else if len >= 128 {
        u64::MAX
    } else {
        !(u64::MAX >> (len - 64))
    };
    (hi, lo)
}

/// Index (0..[`DENY_V6_LENGTHS_HASHED`]) of leading bits `x` in a hashed
/// part of [`DENY_V6_LENGTHS`]: Fibonacci hashing (multiply by 2^64/φ,
/// keep the top 16 bits), one 64-bit multiply in BPF.
#[inline(always)]
pub const fn deny_v6_length_hash(x: u64) -> u32 {
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48) as u32
}

/// The [`DENY_V6_LENGTHS`] entries a source whose leading 64 bits are `hi`
/// (host order) reads, longest lengths first: its /48's, its /32's, its
/// /16's.
#[inline(always)]
pub const fn deny_v6_length_entries(hi: u64) -> [u32; 3] {
    [
        DENY_V6_LENGTHS_DIRECT + DENY_V6_LENGTHS_HASHED + deny_v6_length_hash(hi >> 16),
        DENY_V6_LENGTHS_DIRECT + deny_v6_length_hash(hi >> 32),
        (hi >> 48) as u32,
    ]
}

/// The [`DENY_V6_LENGTHS`] entry listing `lengths` (each ≤ 128): from the
/// low byte up, `length + 1` of each in descending order, 0 after the
/// last; more than [`DENY_V6_LIST_SLOTS`] lengths (or `more`: the list is
/// known to be incomplete) keep the 7 longest and end in
/// [`DENY_V6_LIST_MORE`]. 0 for no length.
pub fn deny_v6_length_list(lengths: impl IntoIterator<Item = u8>, more: bool) -> u64 {
    let mut seen = [false; 129];
    for l in lengths {
        seen[(l as usize).min(128)] = true;
    }
    let count = seen.iter().filter(|s| **s).count();
    let (room, more) = if more || count > DENY_V6_LIST_SLOTS {
        (DENY_V6_LIST_SLOTS - 1, true)
    } else {
        (DENY_V6_LIST_SLOTS, false)
    };
    let mut out = 0u64;
    let mut at = 0;
    for l in (0..=128usize).rev() {
        if at == room {
            break;
        }
        if seen[l] {
            out |= ((l as u64) + 1) << (8 * at);
            at += 1;
        }
    }
    if more {
        out |= (DENY_V6_LIST_MORE as u64) << (8 * at);
    }
    out
}

/// The lengths an entry of [`DENY_V6_LENGTHS`] lists (longest first), and
/// whether it ends in [`DENY_V6_LIST_MORE`] (or holds a byte no build
/// writes): the inverse of [`deny_v6_length_list`].
pub fn deny_v6_list_lengths(entry: u64) -> ([u8; DENY_V6_LIST_SLOTS], usize, bool) {
    let mut out = [0u8; DENY_V6_LIST_SLOTS];
    let mut n = 0;
    for i in 0..DENY_V6_LIST_SLOTS {
        let b = (entry >> (8 * i)) as u8;
        if b == 0 {
            return (out, n, false);
        }
        if b == DENY_V6_LIST_MORE || b > 129 {
            return (out, n, true);
        }
        out[n] = b - 1;
        n += 1;
    }
    (out, n, false)
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], Copy, integers only, explicit padding: every bit
// pattern is valid.
unsafe impl aya::Pod for DenyV6Key {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_masked_words_without_padding() {
        assert_eq!(core::mem::size_of::<DenyV6Key>(), 24);
        let a = 0x2001_0db8_0bad_ffff_1234_5678_9abc_def0u128;
        let k = DenyV6Key::new(a, 48);
        assert_eq!((k.hi, k.lo), (0x2001_0db8_0bad_0000, 0));
        let k = DenyV6Key::new(a, 64);
        assert_eq!((k.hi, k.lo), (0x2001_0db8_0bad_ffff, 0));
        let k = DenyV6Key::new(a, 72);
        assert_eq!((k.hi, k.lo), (0x2001_0db8_0bad_ffff, 0x1200_0000_0000_0000));
        let k = DenyV6Key::new(a, 128);
        assert_eq!((k.hi, k.lo), (0x2001_0db8_0bad_ffff, 0x1234_5678_9abc_def0));
        let k = DenyV6Key::new(a, 0);
        assert_eq!((k.hi, k.lo, k.prefix_len), (0, 0, 0));
        let k = DenyV6Key::new(a, 10);
        assert_eq!(k.hi, 0x2000_0000_0000_0000);
    }

    #[test]
    fn length_lists_are_longest_first_and_mark_overflow() {
        assert_eq!(deny_v6_length_list([], false), 0);
        let l = deny_v6_length_list([48, 128, 56, 48], false);
        assert_eq!(l, 129 | 57 << 8 | 49 << 16);
        let (got, n, more) = deny_v6_list_lengths(l);
        assert_eq!((&got[..n], more), (&[128, 56, 48][..], false));
        // Length 0 (::/0) is listed as 1, never as the end marker.
        let (got, n, _) = deny_v6_list_lengths(deny_v6_length_list([0, 16], false));
        assert_eq!(&got[..n], &[16, 0]);
        // Eight fit; nine keep the seven longest and end in "more".
        let eight = deny_v6_length_list(48..56, false);
        assert_eq!(deny_v6_list_lengths(eight).1, 8);
        assert!(!deny_v6_list_lengths(eight).2);
        let nine = deny_v6_length_list(48..57, false);
        let (got, n, more) = deny_v6_list_lengths(nine);
        assert_eq!((&got[..n], more), (&[56, 55, 54, 53, 52, 51, 50][..], true));
        assert_eq!(nine >> 56, DENY_V6_LIST_MORE as u64);
        let (_, n, more) = deny_v6_list_lengths(deny_v6_length_list([64], true));
        assert_eq!((n, more), (1, true));
    }

    #[test]
    fn entries_are_in_their_parts() {
        for hi in [0u64, u64::MAX, 0x2001_0db8_0bad_0001, 0xfd00 << 48] {
            let [e48, e32, e16] = deny_v6_length_entries(hi);
            assert!(e16 < DENY_V6_LENGTHS_DIRECT);
            assert!((DENY_V6_LENGTHS_DIRECT..DENY_V6_LENGTHS_DIRECT + DENY_V6_LENGTHS_HASHED)
                .contains(&e32));
            assert!((DENY_V6_LENGTHS_DIRECT + DENY_V6_LENGTHS_HASHED..DENY_V6_LENGTHS_ENTRIES)
                .contains(&e48));
        }
        // Sources in one /48 share all three; the next /48 usually not its
        // /48 entry.
        let a = deny_v6_length_entries(0x2001_0db8_0bad_0001);
        let b = deny_v6_length_entries(0x2001_0db8_0bad_ffff);
        assert_eq!(a, b);
        let c = deny_v6_length_entries(0x2001_0db8_0bae_0001);
        assert_ne!(a[0], c[0]);
        assert_eq!(a[1..], c[1..]);
    }
}
