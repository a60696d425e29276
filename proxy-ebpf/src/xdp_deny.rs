//! XDP fast drop of IPv4 sources that an AuthorizationPolicy DENY rule names
//! by `ipBlocks`/`remoteIpBlocks` (LPM trie lookup on the source address).
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::maps::DENY_V4;

/// Drops IPv4 packets whose source matches a deny prefix; passes the rest
/// unchanged (including truncated and non-IPv4 frames).
#[xdp]
pub fn xdp_deny(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + EthHdr::LEN + Ipv4Hdr::LEN > end {
        return XDP_PASS;
    }
    // SAFETY: bounds checked above against data_end.
    let eth = unsafe { &*(start as *const EthHdr) };
    if eth.ether_type != EtherType::Ipv4 as u16 {
        return XDP_PASS;
    }
    // SAFETY: bounds checked above against data_end.
    let ip = unsafe { &*((start + EthHdr::LEN) as *const Ipv4Hdr) };
    let key = Key::new(32, u32::from_ne_bytes(ip.src_addr));
    if DENY_V4.get(&key).is_some() {
        return XDP_DROP;
    }
    XDP_PASS
}
