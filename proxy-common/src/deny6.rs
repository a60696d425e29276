//! The IPv6 side of the XDP deny filter's exact-length lookups: the maps
//! that let `xdp_deny` decide an IPv6 source without walking the
//! [`crate::DENY_V6`] LPM trie, the way IPv4 sources are decided from
//! [`crate::DENY_V4_SLASH16`] and [`crate::DENY_V4_LEN`].
//!
//! A source (its leading 64 bits `hi`, host order) reads three buckets of
//! [`DENY_V6_BUCKETS`] ([`deny_v6_buckets`]): that of its /48 (prefixes of
//! 48–128 bits), its /32 (32–47) and its /16 (0–31), hashed. All three
//! empty (most traffic): no prefix contains the source, passed after three
//! array loads. Otherwise, bucket by bucket, longest lengths first: the
//! bucket's slot prefix is compared in place (a bucket of one prefix, the
//! common case, decides a hit without a hash lookup), then the lengths it
//! lists are looked up in [`DENY_V6_LEN`] with keys built from the
//! source's two 64-bit words ([`DenyV6Key`]); the first hit is the longest
//! prefix containing the source. Past [`DENY_V6_MAX_HASHED_LENGTHS`]
//! lookups, or where a list names more lengths than it holds
//! ([`DENY_V6_LIST_MORE`]), the trie answers (it holds every prefix, so
//! nothing is skipped). Cilium's prefilter and Katran's per-length LPM
//! alternatives make the same trade.

/// IPv6 deny prefixes by exact (prefix length, masked address):
/// [`DenyV6Key`] → `u32`, the same value as in [`crate::DENY_V6`] (the
/// counter index in [`crate::DENY_STATS`], with [`crate::DENY_SCOPED`]
/// for a scoped prefix) (hash, not preallocated, [`crate::MAX_DENY_PREFIXES`]
/// entries).
pub const DENY_V6_LEN: &str = "DENY_V6_LEN";

/// Which IPv6 prefixes a source may be in: array of
/// [`DENY_V6_BUCKET_ENTRIES`] [`DenyV6Bucket`]s in three parts of
/// [`DENY_V6_PART_BUCKETS`], each indexed by [`deny_v6_bucket_hash`] of
/// leading bits ([`deny_v6_buckets`]): first by the leading 16 bits, the
/// prefixes of 0–31 bits overlapping that /16 (a /10 is in the buckets of
/// its 64 /16s); then by the leading 32 bits, those of 32–47 bits; then by
/// the leading 48 bits, those of 48–128 bits. A bucket holds its longest
/// prefix in its slot (compared in place: one array load decides a source
/// in a bucket of one prefix, the common case) and lists the lengths of
/// the others, looked up in [`DENY_V6_LEN`]. A hash collision only adds a
/// compare or a lookup that misses. Used when
/// [`crate::DenyConfig::v6_mode`] is [`crate::deny_mode::BY_LENGTH6`].
pub const DENY_V6_BUCKETS: &str = "DENY_V6_BUCKETS";

/// Buckets of each part (/16, /32, /48) of [`DENY_V6_BUCKETS`].
pub const DENY_V6_PART_BUCKETS: u32 = 1 << 14;
/// Entries of [`DENY_V6_BUCKETS`]: the /16 part, then the /32 part, then
/// the /48 part (1.5 MiB of kernel memory).
pub const DENY_V6_BUCKET_ENTRIES: u32 = 3 * DENY_V6_PART_BUCKETS;

/// Lengths one length list ([`DenyV6Bucket::lengths`]) holds: one per
/// byte.
pub const DENY_V6_LIST_SLOTS: usize = 8;
/// A byte of a length list meaning "more lengths than the list holds":
/// the program asks the trie from there on.
pub const DENY_V6_LIST_MORE: u8 = 0xff;
/// At most this many [`DENY_V6_LEN`] lookups per source; lengths left
/// after them are decided by the trie (a lookup costs about what a third
/// of a 128-bit trie walk does).
pub const DENY_V6_MAX_HASHED_LENGTHS: u32 = 4;

/// One entry of [`DENY_V6_BUCKETS`]: all zero when no prefix is in it.
///
/// The daemon changes a bucket so that a program reading it while it is
/// written (the kernel copies a value a word at a time, in no promised
/// order) never misses a prefix nor matches a half-written one: each write
/// changes either only `lengths`, only `slot`, or only `hi`/`lo` while
/// `slot` is 0 (first the union of the old and new lengths with the old
/// and new slot's, then the slot cleared, its address written, the slot
/// set, and the exact list last).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DenyV6Bucket {
    /// The lengths of the bucket's other prefixes, a length list
    /// ([`deny_v6_length_list`]), looked up in [`DENY_V6_LEN`] longest
    /// first.
    pub lengths: u64,
    /// The slot prefix's address bits 127..64, host order, masked.
    pub hi: u64,
    /// The slot prefix's address bits 63..0, host order, masked.
    pub lo: u64,
    /// 0: no slot prefix; else its length + 1 in the low 32 bits and its
    /// value (as in [`DENY_V6_LEN`]) in the high 32 bits. The slot prefix
    /// is one of the bucket's longest, so a match is the longest prefix
    /// containing the source among those of its part.
    pub slot: u64,
}

impl DenyV6Bucket {
    /// [`DenyV6Bucket::slot`] of prefix length `len` with value `value`.
    pub const fn slot_word(len: u32, value: u32) -> u64 {
        (len as u64 + 1) | (value as u64) << 32
    }
}

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

/// Index (0..[`DENY_V6_PART_BUCKETS`]) of leading bits `x` in a part of
/// [`DENY_V6_BUCKETS`]: Fibonacci hashing (multiply by 2^64/φ, keep the
/// top 14 bits), one 64-bit multiply in BPF.
#[inline(always)]
pub const fn deny_v6_bucket_hash(x: u64) -> u32 {
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - DENY_V6_PART_BUCKETS.trailing_zeros())) as u32
}

/// The [`DENY_V6_BUCKETS`] entries a source whose leading 64 bits are `hi`
/// (host order) reads, longest prefixes first: its /48's, its /32's, its
/// /16's.
#[inline(always)]
pub const fn deny_v6_buckets(hi: u64) -> [u32; 3] {
    [
        2 * DENY_V6_PART_BUCKETS + deny_v6_bucket_hash(hi >> 16),
        DENY_V6_PART_BUCKETS + deny_v6_bucket_hash(hi >> 32),
        deny_v6_bucket_hash(hi >> 48),
    ]
}

/// The length list ([`DenyV6Bucket::lengths`]) of `lengths` (each ≤ 128): from the
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

/// The lengths a length list names (longest first), and
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
mod pod {
    // SAFETY: #[repr(C)], Copy, integers only, explicit padding: every bit
    // pattern is valid.
    unsafe impl aya::Pod for super::DenyV6Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DenyV6Bucket {}
}

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
    fn buckets_are_in_their_parts() {
        assert_eq!(core::mem::size_of::<DenyV6Bucket>(), 32);
        let p = DENY_V6_PART_BUCKETS;
        for hi in [0u64, u64::MAX, 0x2001_0db8_0bad_0001, 0xfd00 << 48] {
            let [b48, b32, b16] = deny_v6_buckets(hi);
            assert!(b16 < p);
            assert!((p..2 * p).contains(&b32));
            assert!((2 * p..DENY_V6_BUCKET_ENTRIES).contains(&b48));
        }
        // Sources in one /48 share all three; the next /48 usually not its
        // /48 bucket.
        let a = deny_v6_buckets(0x2001_0db8_0bad_0001);
        let b = deny_v6_buckets(0x2001_0db8_0bad_ffff);
        assert_eq!(a, b);
        let c = deny_v6_buckets(0x2001_0db8_0bae_0001);
        assert_ne!(a[0], c[0]);
        assert_eq!(a[1..], c[1..]);
        assert_eq!(DenyV6Bucket::slot_word(128, 7), 129 | 7 << 32);
    }
}
