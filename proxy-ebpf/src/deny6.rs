//! The IPv6 half of `xdp_deny`'s source lookup: the source's three
//! [`DENY_V6_BUCKETS`] (its /48's, /32's and /16's), each one's slot prefix
//! compared in place and the lengths it lists looked up in [`DENY_V6_LEN`],
//! longest first; the `DENY_V6` trie only past
//! [`DENY_V6_MAX_HASHED_LENGTHS`] lookups (see `proxy_common::deny6`).
use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap},
};
use proxy_common::{
    deny_v6_buckets, deny_v6_masks, DenyV6Bucket, DenyV6Key, DENY_V6_LIST_MORE,
    DENY_V6_LIST_SLOTS, DENY_V6_MAX_HASHED_LENGTHS,
};

use crate::maps::DENY_V6;

/// `BPF_F_NO_PREALLOC`, as in `maps.rs`.
const NO_PREALLOC: u32 = 1;

/// IPv6 deny prefixes by exact (length, masked address)
/// (`proxy_common::DENY_V6_LEN`).
#[map(name = "DENY_V6_LEN")]
pub static DENY_V6_LEN: HashMap<DenyV6Key, u32> =
    HashMap::with_max_entries(proxy_common::MAX_DENY_PREFIXES, NO_PREALLOC);

/// Each /16, /32 and /48 bucket's slot prefix and other lengths
/// (`proxy_common::DENY_V6_BUCKETS`).
#[map(name = "DENY_V6_BUCKETS")]
pub static DENY_V6_BUCKETS: Array<DenyV6Bucket> =
    Array::with_max_entries(proxy_common::DENY_V6_BUCKET_ENTRIES, 0);

/// What one bucket decided.
enum Step {
    /// The longest prefix containing the source: its value.
    Hit(u32),
    /// No prefix of the bucket contains the source.
    Next,
    /// Ask the trie (lengths past the lookup budget, or a "more" byte).
    Trie,
}

/// The value of the longest IPv6 deny prefix containing the source whose
/// address is `words` (the packet's two 64-bit loads, bytes as in the
/// packet), or `None`. Three array loads decide most sources (all three
/// buckets empty); a bucket of one prefix decides with a compare; other
/// lengths cost one `DENY_V6_LEN` lookup each; the trie past
/// [`DENY_V6_MAX_HASHED_LENGTHS`] lookups or at a [`DENY_V6_LIST_MORE`]
/// byte.
#[inline(always)]
pub fn lookup(words: [u64; 2]) -> Option<u32> {
    let hi = u64::from_be(words[0]);
    let lo = u64::from_be(words[1]);
    let [i48, i32_, i16] = deny_v6_buckets(hi);
    let b48 = DENY_V6_BUCKETS.get_ptr(i48)?;
    let b32 = DENY_V6_BUCKETS.get_ptr(i32_)?;
    let b16 = DENY_V6_BUCKETS.get_ptr(i16)?;
    // SAFETY: pointers to live, 8-aligned array values; word reads.
    let (s48, l48, s32, l32, s16, l16) = unsafe {
        (
            (*b48).slot,
            (*b48).lengths,
            (*b32).slot,
            (*b32).lengths,
            (*b16).slot,
            (*b16).lengths,
        )
    };
    if s48 | l48 | s32 | l32 | s16 | l16 == 0 {
        return None;
    }
    let mut n = 0u32;
    for (b, slot, list) in [(b48, s48, l48), (b32, s32, l32), (b16, s16, l16)] {
        match bucket(b, slot, list, hi, lo, &mut n) {
            Step::Hit(v) => return Some(v),
            Step::Next => {}
            Step::Trie => return trie(words),
        }
    }
    None
}

/// One bucket: its slot prefix (`slot`, read once), then the lengths of
/// `list`, `n` counting the hash lookups made.
#[inline(always)]
fn bucket(
    b: *const DenyV6Bucket,
    slot: u64,
    mut list: u64,
    hi: u64,
    lo: u64,
    n: &mut u32,
) -> Step {
    if slot != 0 {
        // In 0..=128 for any word (a corrupt one compares and misses).
        let len = ((slot as u32).wrapping_sub(1)) & 0xff;
        let len = if len > 128 { 128 } else { len };
        let (mhi, mlo) = deny_v6_masks(len);
        // SAFETY: as in `lookup`.
        let (shi, slo) = unsafe { ((*b).hi, (*b).lo) };
        if hi & mhi == shi && lo & mlo == slo {
            return Step::Hit((slot >> 32) as u32);
        }
    }
    let mut i = 0;
    while i < DENY_V6_LIST_SLOTS && list != 0 {
        if *n >= DENY_V6_MAX_HASHED_LENGTHS {
            return Step::Trie;
        }
        let byte = (list & 0xff) as u32;
        list >>= 8;
        if byte == DENY_V6_LIST_MORE as u32 || byte > 129 {
            return Step::Trie;
        }
        // In 0..=128 (byte is 1..=129 here).
        let len = (byte - 1) & 0xff;
        let (mhi, mlo) = deny_v6_masks(len);
        let key = DenyV6Key {
            hi: hi & mhi,
            lo: lo & mlo,
            prefix_len: len,
            pad: 0,
        };
        // SAFETY: copied out at once.
        if let Some(v) = unsafe { DENY_V6_LEN.get(&key) } {
            return Step::Hit(*v);
        }
        *n += 1;
        i += 1;
    }
    Step::Next
}

/// The `DENY_V6` trie's longest prefix containing `words`.
#[inline(always)]
pub fn trie(words: [u64; 2]) -> Option<u32> {
    // SAFETY: two u64 are 16 bytes in memory order, as loaded.
    let src: [u8; 16] = unsafe { core::mem::transmute(words) };
    DENY_V6.get(Key::new(128, src)).copied()
}
