//! Joining two nodes: a veth pair between their namespaces and a route on
//! each for the other's pod CIDR, via the other node's address — the
//! simplest "flat pod network" a CNI builds between two hosts.
use anyhow::bail;

use super::{netns, Node};

/// Links nodes `a` and `b` (distinct indexes) so that pods on either reach
/// pods and the node address on the other (over IPv6 too when both have
/// [`Node::enable_ipv6`]; call it after that). The link interfaces are
/// `l<peer id>` in each node's namespace; they go away with either node.
pub fn link(a: &Node, b: &Node) -> anyhow::Result<()> {
    if a.index() == b.index() {
        bail!(
            "nodes {} and {} both use pod CIDR {}: give them distinct indexes",
            a.name(),
            b.name(),
            a.pod_cidr()
        );
    }
    let (a_if, b_if) = (format!("l{}", b.id()), format!("l{}", a.id()));
    netns::ip(&[
        "-n",
        a.netns(),
        "link",
        "add",
        &a_if,
        "type",
        "veth",
        "peer",
        "name",
        &b_if,
        "netns",
        b.netns(),
    ])?;
    for (node, ifname, peer) in [(a, &a_if, b), (b, &b_if, a)] {
        netns::ip_batch(
            node.netns(),
            &[
                format!("link set {ifname} up"),
                // `onlink`: the peer's address is on the wire though no
                // prefix on this interface covers it; it answers ARP for it
                // because it is a local address on the peer's `lo`.
                format!(
                    "route add {} via {} dev {ifname} onlink src {}",
                    peer.pod_cidr(),
                    peer.gateway(),
                    node.gateway()
                ),
            ],
        )?;
    }
    if a.ipv6() && b.ipv6() {
        // IPv6 next hops must be on-link: each end gets link-local
        // `fe80::1:<its node index>`, and each node routes the other's
        // IPv6 pod CIDR (which holds its node address) through it.
        for (node, ifname) in [(a, &a_if), (b, &b_if)] {
            netns::ip_batch(
                node.netns(),
                &[format!(
                    "addr add fe80::1:{:x}/64 dev {ifname} nodad",
                    node.index()
                )],
            )?;
        }
        for (node, ifname, peer) in [(a, &a_if, b), (b, &b_if, a)] {
            netns::ip_batch(
                node.netns(),
                &[format!(
                    "route add {} via fe80::1:{:x} dev {ifname} src {}",
                    super::ipam::pod_cidr6(peer.index()),
                    peer.index(),
                    node.gateway6()
                )],
            )?;
        }
    }
    Ok(())
}
