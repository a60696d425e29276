//! XDP fast drop of sources that an AuthorizationPolicy DENY rule names by
//! `ipBlocks`/`remoteIpBlocks` (LPM trie lookup on the source address,
//! IPv4 and IPv6), each drop counted per prefix; and `xdp_drop`, the
//! drop-everything and transmit-everything floors `cargo xtask bench xdp`
//! compares against.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    macros::xdp,
    maps::lpm_trie::Key,
    programs::XdpContext,
};

use proxy_common::{deny_mode, DenyConfig, DenyV4Key};

use crate::maps::{DENY_CONFIG, DENY_STATS, DENY_V4, DENY_V4_LEN, DENY_V6};

const ETH_LEN: usize = 14;

/// Drops IPv4 and IPv6 packets whose source matches a deny prefix; passes
/// the rest unchanged (including truncated and other frames).
#[xdp]
pub fn xdp_deny(ctx: XdpContext) -> u32 {
    if denied(&ctx) {
        XDP_DROP
    } else {
        XDP_PASS
    }
}

/// Drops every packet: the cost floor of an XDP program.
#[xdp]
pub fn xdp_drop(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

/// Transmits every packet unchanged: the floor of a program that answers
/// `XDP_TX` (in live-frame test runs the kernel's transmit path is part of
/// every such figure).
#[xdp]
pub fn xdp_tx(_ctx: XdpContext) -> u32 {
    XDP_TX
}

/// Whether the frame's IPv4/IPv6 source is in a deny trie; counts the drop
/// on the prefix's counter.
#[inline(always)]
pub fn denied(ctx: &XdpContext) -> bool {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + ETH_LEN > end {
        return false;
    }
    // SAFETY: bounds checked above against data_end.
    let ether_type = unsafe { *((start + 12) as *const [u8; 2]) };
    let cfg = DENY_CONFIG.get(0).copied().unwrap_or(DenyConfig::default());
    let hit = match ether_type {
        [0x08, 0x00] => {
            if cfg.v4_mode == deny_mode::EMPTY || start + ETH_LEN + 20 > end {
                return false;
            }
            // SAFETY: bounds checked above (source at IPv4 offset 12).
            let src = unsafe { *((start + ETH_LEN + 12) as *const [u8; 4]) };
            if cfg.v4_mode == deny_mode::BY_LENGTH {
                by_length(u32::from_be_bytes(src), cfg.v4_lengths)
            } else {
                DENY_V4.get(Key::new(32, u32::from_ne_bytes(src))).copied()
            }
        }
        [0x86, 0xdd] => {
            if cfg.v6_mode == deny_mode::EMPTY || start + ETH_LEN + 40 > end {
                return false;
            }
            // SAFETY: bounds checked above (source at IPv6 offset 8).
            let src = unsafe { *((start + ETH_LEN + 8) as *const [u8; 16]) };
            DENY_V6.get(Key::new(128, src)).copied()
        }
        _ => None,
    };
    let Some(index) = hit else {
        return false;
    };
    if let Some(n) = DENY_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe { *n += 1 };
    }
    true
}

/// The counter of the longest prefix in `DENY_V4_LEN` containing `src`
/// (host byte order), trying only the lengths set in `lengths`.
#[inline(always)]
fn by_length(src: u32, lengths: u64) -> Option<u32> {
    let mut i = 0u32;
    while i <= 32 {
        let len = 32 - i;
        if lengths & (1u64 << len) != 0 {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let key = DenyV4Key {
                prefix_len: len,
                addr: src & mask,
            };
            // SAFETY: copied out at once.
            if let Some(v) = unsafe { DENY_V4_LEN.get(&key) } {
                return Some(*v);
            }
        }
        i += 1;
    }
    None
}
