//! Addresses: a /24 of pod IPs per node (`10.244.<node index>.0/24`, as
//! kubeadm's default pod CIDR 10.244.0.0/16 split per node) and Service
//! ClusterIPs in 10.96.0.0/16 (kubeadm's default service CIDR).
//!
//! These addresses exist only inside the test's namespaces; no route from
//! them leads to the host.
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The node's own address on its pod network (on the node netns' `lo`);
/// pods use it as their default gateway.
pub fn gateway(node_index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, node_index, 1)
}

/// The node's pod CIDR, `10.244.<index>.0/24`.
pub fn pod_cidr(node_index: u8) -> String {
    format!("10.244.{node_index}.0/24")
}

/// The `n`-th pod's IP (n from 0): `10.244.<index>.<n + 2>`; up to 253 pods.
pub fn pod_ip(node_index: u8, n: usize) -> anyhow::Result<Ipv4Addr> {
    let host = u8::try_from(n + 2)
        .ok()
        .filter(|h| *h < 255)
        .ok_or_else(|| anyhow::anyhow!("node 10.244.{node_index}.0/24 is full (253 pods)"))?;
    Ok(Ipv4Addr::new(10, 244, node_index, host))
}

/// The node's IPv6 address on its pod network, `fd00:244:<index>::1`
/// (on the node netns' `lo`), with [`Node::enable_ipv6`](super::Node::enable_ipv6).
pub fn gateway6(node_index: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x244, u16::from(node_index), 0, 0, 0, 0, 1)
}

/// The `n`-th pod's IPv6 address (n from 0): `fd00:244:<index>::<n + 2>`.
pub fn pod_ip6(node_index: u8, n: usize) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x244,
        u16::from(node_index),
        0,
        0,
        0,
        0,
        n as u16 + 2,
    )
}

/// The node's IPv6 pod CIDR, `fd00:244:<index>::/64`.
pub fn pod_cidr6(node_index: u8) -> String {
    format!("fd00:244:{node_index:x}::/64")
}

/// The service CIDR.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// Addresses Kubernetes reserves by convention: the `kubernetes` Service
/// and cluster DNS.
const RESERVED: [u16; 2] = [1, 10];

/// A ClusterIP for `namespace/name`, the same on every node and every run:
/// an FNV-1a hash of the name into 10.96.0.0/16, then the next free address
/// when `taken` already holds it.
pub fn cluster_ip(namespace: &str, name: &str, taken: &BTreeSet<Ipv4Addr>) -> Ipv4Addr {
    let mut h: u32 = 0x811c_9dc5;
    for b in namespace.bytes().chain([b'/']).chain(name.bytes()) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    // Host part in 1..=65534 (no network or broadcast address).
    let mut host = (h % 65534 + 1) as u16;
    loop {
        let ip = Ipv4Addr::new(10, 96, (host >> 8) as u8, host as u8);
        if !RESERVED.contains(&host) && !taken.contains(&ip) {
            return ip;
        }
        host = host % 65534 + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ips_are_stable_and_distinct() {
        let none = BTreeSet::new();
        let a = cluster_ip("default", "reviews", &none);
        assert_eq!(a, cluster_ip("default", "reviews", &none));
        assert_ne!(a, cluster_ip("default", "ratings", &none));
        assert_ne!(a, cluster_ip("other", "reviews", &none));
        assert_eq!(a.octets()[..2], [10, 96]);
        let taken = BTreeSet::from([a]);
        let b = cluster_ip("default", "reviews", &taken);
        assert_ne!(a, b);
        assert_eq!(b.octets()[..2], [10, 96]);
    }

    #[test]
    fn pod_ips_skip_network_and_gateway() {
        assert_eq!(pod_ip(3, 0).unwrap(), Ipv4Addr::new(10, 244, 3, 2));
        assert_eq!(pod_ip(3, 252).unwrap(), Ipv4Addr::new(10, 244, 3, 254));
        assert!(pod_ip(3, 253).is_err());
        assert_eq!(gateway(3), Ipv4Addr::new(10, 244, 3, 1));
        assert_eq!(gateway6(3).to_string(), "fd00:244:3::1");
        assert_eq!(pod_ip6(3, 0).to_string(), "fd00:244:3::2");
        assert_eq!(pod_cidr6(10), "fd00:244:a::/64");
    }
}
