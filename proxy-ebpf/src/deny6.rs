//! The IPv6 half of `xdp_deny`'s source lookup: exact-length hash lookups
//! for the lengths a source's [`DENY_V6_LENGTHS`] entries list, longest
//! first, the `DENY_V6` trie only past
//! [`DENY_V6_MAX_HASHED_LENGTHS`] lengths (see `proxy_common::deny6`).
use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap},
};
use proxy_common::{
    deny_v6_length_entries, deny_v6_masks, DenyV6Key, DENY_V6_LIST_MORE,
    DENY_V6_MAX_HASHED_LENGTHS,
};

use crate::maps::DENY_V6;

/// `BPF_F_NO_PREALLOC`, as in `maps.rs`.
const NO_PREALLOC: u32 = 1;

/// IPv6 deny prefixes by exact (length, masked address)
/// (`proxy_common::DENY_V6_LEN`).
#[map(name = "DENY_V6_LEN")]
pub static DENY_V6_LEN: HashMap<DenyV6Key, u32> =
    HashMap::with_max_entries(proxy_common::MAX_DENY_PREFIXES, NO_PREALLOC);

/// Which lengths an IPv6 source may match, per /16, hashed /32 and hashed
/// /48 (`proxy_common::DENY_V6_LENGTHS`).
#[map(name = "DENY_V6_LENGTHS")]
pub static DENY_V6_LENGTHS: Array<u64> =
    Array::with_max_entries(proxy_common::DENY_V6_LENGTHS_ENTRIES, 0);

/// The value of the longest IPv6 deny prefix containing the source whose
/// address is `words` (the packet's two 64-bit loads, bytes as in the
/// packet), or `None`. Three array loads decide most sources (no length
/// listed); then one `DENY_V6_LEN` lookup per listed length, longest
/// first; the trie past [`DENY_V6_MAX_HASHED_LENGTHS`] lookups or at a
/// [`DENY_V6_LIST_MORE`] byte.
#[inline(always)]
pub fn lookup(words: [u64; 2]) -> Option<u32> {
    let hi = u64::from_be(words[0]);
    let lo = u64::from_be(words[1]);
    let [i48, i32_, i16] = deny_v6_length_entries(hi);
    let mut cur = DENY_V6_LENGTHS.get(i48).copied().unwrap_or(0);
    let mut next = DENY_V6_LENGTHS.get(i32_).copied().unwrap_or(0);
    let mut last = DENY_V6_LENGTHS.get(i16).copied().unwrap_or(0);
    if cur | next | last == 0 {
        return None;
    }
    let mut n = 0u32;
    while n < DENY_V6_MAX_HASHED_LENGTHS {
        // On to the next non-empty list (the /48's lengths are all longer
        // than the /32's, which are longer than the /16's).
        if cur == 0 {
            cur = next;
            next = last;
            last = 0;
        }
        if cur == 0 {
            cur = next;
            next = 0;
        }
        if cur == 0 {
            return None;
        }
        let b = (cur & 0xff) as u32;
        cur >>= 8;
        if b == DENY_V6_LIST_MORE as u32 || b > 129 {
            return trie(words);
        }
        // In 0..=128 (b is 1..=129 here).
        let len = (b - 1) & 0xff;
        let (mhi, mlo) = deny_v6_masks(len);
        let key = DenyV6Key {
            hi: hi & mhi,
            lo: lo & mlo,
            prefix_len: len,
            pad: 0,
        };
        // SAFETY: copied out at once.
        if let Some(v) = unsafe { DENY_V6_LEN.get(&key) } {
            return Some(*v);
        }
        n += 1;
    }
    if cur | next | last == 0 {
        return None;
    }
    trie(words)
}

/// The `DENY_V6` trie's longest prefix containing `words`.
#[inline(always)]
pub fn trie(words: [u64; 2]) -> Option<u32> {
    // SAFETY: two u64 are 16 bytes in memory order, as loaded.
    let src: [u8; 16] = unsafe { core::mem::transmute(words) };
    DENY_V6.get(Key::new(128, src)).copied()
}
