//! What a pinned map's entries mean, by version: the part of a map's
//! layout the kernel cannot see.
//!
//! The loader pins the maps of [`crate::PINNED_MAPS`],
//! [`crate::PINNED_MAPS6`] and [`PINNED_XDP_MAPS`] so a restarted or upgraded daemon keeps their
//! entries. Before it reuses a pin it compares the pinned map's layout —
//! map type, key size, value size, capacity, flags (read from the kernel)
//! and the version below (recorded beside the pins) — with its own build's.
//! The kernel catches a changed key or value size; a field whose meaning
//! changed at the same size (a flag bit, a counter index, a byte order) is
//! caught only by the version.
//!
//! **Bump a map's version by hand** whenever a new build would misread the
//! entries an older build wrote (or the reverse). Maps not listed are at
//! version 1.

use crate::{deny4::*, deny6::*, maps::*, maps6::*, xlb::*, xlb6::*};

/// The XDP maps pinned beside [`crate::PINNED_MAPS`]: the deny tries and
/// their counters, and the external VIP balancer's tables (IPv4 and IPv6) — above all its
/// connection table [`XLB_CONNS`], so flows keep their node across a
/// restart.
pub const PINNED_XDP_MAPS: [&str; 22] = [
    DENY_V4,
    DENY_V4_DIR24,
    DENY_V6,
    DENY_V6_LEN,
    DENY_V6_BUCKETS,
    DENY_V4_LEN,
    DENY_V4_SLASH16,
    DENY_DST,
    DENY_CONFIG,
    DENY_STATS,
    XLB_VIPS,
    XLB_RINGS,
    XLB_REALS,
    XLB_REALS_4IN6,
    XLB_CONNS,
    XLB_CONFIG,
    XLB_STATS,
    XLB_VIPS6,
    XLB_RINGS6,
    XLB_REALS6,
    XLB_CONNS6,
    XLB_CONFIG6,
];

/// Layout version of each pinned map (see the module documentation).
pub const MAP_LAYOUT_VERSIONS: &[(&str, u32)] = &[
    (SERVICES, 1),
    (BACKENDS, 1),
    (MAGLEV, 1),
    (WORKLOADS, 1),
    (PROXY_CONFIG, 1),
    (ORIG_DST, 1),
    (SOCK_NAT, 1),
    (REV_NAT, 1),
    (SERVICE_STATS, 1),
    (BACKEND_STATS, 1),
    (TCP_STATS, 1),
    (TCP_STATS_DIRECT, 1),
    (SERVICES6, 1),
    (BACKENDS6, 1),
    (SOCK_NAT6, 1),
    (REV_NAT6, 1),
    (WORKLOADS6, 1),
    (PROXY_CONFIG6, 1),
    (ORIG_DST6, 1),
    (TCP_STATS6, 1),
    (DENY_V4, 1),
    (DENY_V6, 1),
    (DENY_V6_LEN, 1),
    (DENY_V6_BUCKETS, 1),
    (DENY_V4_LEN, 1),
    (DENY_V4_SLASH16, 1),
    (DENY_V4_DIR24, 1),
    (DENY_DST, 1),
    (DENY_CONFIG, 1),
    (DENY_STATS, 1),
    (XLB_VIPS, 1),
    (XLB_RINGS, 1),
    (XLB_REALS, 1),
    (XLB_REALS_4IN6, 1),
    (XLB_CONNS, 1),
    (XLB_CONFIG, 1),
    (XLB_STATS, 1),
    (XLB_VIPS6, 1),
    (XLB_RINGS6, 1),
    (XLB_REALS6, 1),
    (XLB_CONNS6, 1),
    (XLB_CONFIG6, 1),
];

/// The layout version of map `name` in this build (1 when unlisted).
pub fn layout_version(name: &str) -> u32 {
    MAP_LAYOUT_VERSIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(1, |(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pinned_map_has_one_version() {
        for name in PINNED_MAPS
            .iter()
            .chain(PINNED_MAPS6.iter())
            .chain(PINNED_XDP_MAPS.iter())
        {
            let n = MAP_LAYOUT_VERSIONS
                .iter()
                .filter(|(m, _)| m == name)
                .count();
            assert_eq!(n, 1, "{name} has {n} version entries");
        }
        assert_eq!(layout_version("NOT_A_MAP"), 1);
    }
}
