//! Frames an XDP program must let through untouched, and the check that it
//! does: shared by the IPv4 and IPv6 balancer tests (`kernel_xdp_lb`,
//! `kernel_xdp_lb6`).
use aya::programs::Xdp;

use crate::xdp::{run, XDP_PASS};

/// A copy of `frame` (a whole Ethernet frame) with EtherType ARP (0x0806):
/// the same bytes, but not an IP packet.
pub fn as_arp(frame: &[u8]) -> Vec<u8> {
    let mut arp = frame.to_vec();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    arp
}

/// Asserts that `prog` returns XDP_PASS for each of `frames` (whole
/// Ethernet frames) and leaves its bytes as they were.
pub fn assert_passed_unchanged(prog: &Xdp, frames: impl IntoIterator<Item = Vec<u8>>) {
    for f in frames {
        assert_eq!(run(prog, &f), (XDP_PASS, f.clone()));
    }
}
