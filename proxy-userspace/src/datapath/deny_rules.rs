//! Which AuthorizationPolicy DENY rules the uplink XDP program enforces:
//! those that depend only on the source address, for the workloads of this
//! node the policy selects.
//!
//! A rule qualifies when it has no `to` and no `when`, at least one `from`,
//! and every `from.source` sets exactly one of `ipBlocks` or
//! `remoteIpBlocks` and nothing else (no `not*` field, no principals,
//! namespaces, service accounts or trust domains). `remoteIpBlocks` is the
//! packet's source because Strait does not read `X-Forwarded-For` for
//! policy (its `remote.ip` is the peer, as Envoy's without trusted
//! proxies). The policy itself must be fully enforceable
//! (`not_enforced` empty) and `action: DENY`.
//!
//! Istio decides on connections and requests; the kernel rule therefore
//! drops only TCP segments that open a connection (SYN without ACK) from
//! the prefix to a selected workload's address ([`DenyScope::To`]). Every
//! other rule, and every policy, is still enforced by the node proxy: the
//! XDP drop is an early copy of a decision the proxy makes too, never the
//! only place it is made.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use strait_config::snapshot::policy::{policy_applies, AuthzAction, AuthzPolicy, Source};
use strait_config::MeshSnapshot;

use super::xdp::{DenyScope, SourcePrefix};

/// The source prefixes of a qualifying rule's `from`, or `None` when the
/// rule depends on anything else.
fn rule_prefixes(rule: &strait_config::snapshot::AuthzRule) -> Option<Vec<SourcePrefix>> {
    if !rule.to.is_empty() || !rule.when.is_empty() || rule.from.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for s in &rule.from {
        let blocks = match (s.ip_blocks.is_empty(), s.remote_ip_blocks.is_empty()) {
            (false, true) => &s.ip_blocks,
            (true, false) => &s.remote_ip_blocks,
            _ => return None,
        };
        let only = if s.remote_ip_blocks.is_empty() {
            Source {
                ip_blocks: blocks.clone(),
                ..Default::default()
            }
        } else {
            Source {
                remote_ip_blocks: blocks.clone(),
                ..Default::default()
            }
        };
        if *s != only {
            return None;
        }
        for b in blocks {
            // Same parsing as the policy engine (a bare address is /32 or
            // /128); a block it cannot parse makes the policy fail closed
            // there, and the rule is left to it.
            let net = b
                .parse::<IpNet>()
                .ok()
                .or_else(|| b.parse::<IpAddr>().ok().map(IpNet::from))?;
            out.push((net.addr(), net.prefix_len()));
        }
    }
    Some(out)
}

/// The source prefixes of `p` the kernel may drop, or empty.
fn policy_prefixes(p: &AuthzPolicy) -> Vec<SourcePrefix> {
    if p.action != AuthzAction::Deny || !p.not_enforced.is_empty() {
        return Vec::new();
    }
    p.rules.iter().filter_map(rule_prefixes).flatten().collect()
}

/// The XDP deny rules of `snap` for node `node`: every qualifying DENY
/// rule's source prefixes, scoped to the addresses of the workloads on
/// this node the policy selects (a workload whose node is unknown counts
/// as local, as for the policy engine's scope). Sorted and merged by
/// prefix; empty when no DENY policy qualifies.
pub fn kernel_deny_rules(
    snap: &MeshSnapshot,
    node: Option<&str>,
) -> Vec<(SourcePrefix, DenyScope)> {
    let pol = &snap.policies.authorization;
    let candidates: Vec<(&AuthzPolicy, Vec<SourcePrefix>)> = pol
        .iter()
        .map(|p| (p, policy_prefixes(p)))
        .filter(|(_, prefixes)| !prefixes.is_empty())
        .collect();
    if candidates.is_empty() {
        return Vec::new();
    }
    let root = snap.mesh.root_namespace.as_str();
    let mut out: BTreeMap<SourcePrefix, BTreeSet<IpAddr>> = BTreeMap::new();
    for (ip, w) in &snap.workloads {
        let local = match (node, &w.node) {
            (Some(me), Some(n)) => me == n,
            _ => true,
        };
        if !local {
            continue;
        }
        for (p, prefixes) in &candidates {
            if policy_applies(
                &p.selector,
                &p.target_refs,
                root,
                &w.namespace,
                &w.labels,
                &w.services,
            ) {
                for pre in prefixes {
                    out.entry(*pre).or_default().insert(*ip);
                }
            }
        }
    }
    out.into_iter()
        .map(|(p, d)| (p, DenyScope::To(d)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(yaml: &str) -> MeshSnapshot {
        let loaded = strait_config::load::load_str(yaml, "test.yaml");
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let (snap, diags) = strait_config::compile(&loaded.resources);
        assert!(!diags.iter().any(|d| d.is_error()), "{diags:?}");
        snap
    }

    const PODS: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: web-a, namespace: shop, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: c, image: x}]}
status: {podIP: 10.244.0.5, phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, namespace: shop, labels: {app: web}}
spec: {nodeName: node-b, containers: [{name: c, image: x}]}
status: {podIP: 10.244.1.5, phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: node-a, containers: [{name: c, image: x}]}
status: {podIP: 10.244.0.6, phase: Running}
";

    fn policy(name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n{spec}"
        )
    }

    fn to(ips: &[&str]) -> DenyScope {
        DenyScope::To(ips.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn p(s: &str, l: u8) -> SourcePrefix {
        (s.parse().unwrap(), l)
    }

    #[test]
    fn source_only_deny_rules_are_scoped_to_selected_local_workloads() {
        let yaml = format!(
            "{PODS}{}{}",
            policy(
                "block",
                "  selector: {matchLabels: {app: web}}\n  action: DENY\n  rules:\n  - from:\n    - source: {ipBlocks: [\"192.0.2.0/24\", \"203.0.113.7\"]}\n    - source: {remoteIpBlocks: [\"2001:db8::/32\"]}\n"
            ),
            policy(
                "all",
                "  action: DENY\n  rules:\n  - from:\n    - source: {ipBlocks: [\"198.51.100.0/24\"]}\n"
            ),
        );
        let rules = kernel_deny_rules(&snapshot(&yaml), Some("node-a"));
        assert_eq!(
            rules,
            vec![
                (p("192.0.2.0", 24), to(&["10.244.0.5"])),
                (p("198.51.100.0", 24), to(&["10.244.0.5", "10.244.0.6"])),
                (p("203.0.113.7", 32), to(&["10.244.0.5"])),
                (p("2001:db8::", 32), to(&["10.244.0.5"])),
            ]
        );
        // Node b hosts only web-b.
        let rules = kernel_deny_rules(&snapshot(&yaml), Some("node-b"));
        assert_eq!(rules.len(), 4);
        assert!(
            rules.iter().all(|(_, s)| *s == to(&["10.244.1.5"])),
            "{rules:?}"
        );
    }

    #[test]
    fn rules_that_depend_on_more_than_the_source_stay_with_the_proxy() {
        for spec in [
            // An operation.
            "  action: DENY\n  rules:\n  - from:\n    - source: {ipBlocks: [\"192.0.2.0/24\"]}\n    to:\n    - operation: {ports: [\"80\"]}\n",
            // A condition.
            "  action: DENY\n  rules:\n  - from:\n    - source: {ipBlocks: [\"192.0.2.0/24\"]}\n    when:\n    - key: destination.port\n      values: [\"80\"]\n",
            // Another source field.
            "  action: DENY\n  rules:\n  - from:\n    - source: {ipBlocks: [\"192.0.2.0/24\"], namespaces: [\"x\"]}\n",
            // A negation.
            "  action: DENY\n  rules:\n  - from:\n    - source: {ipBlocks: [\"192.0.2.0/16\"], notIpBlocks: [\"192.0.2.0/24\"]}\n",
            // Both kinds of block (ANDed).
            "  action: DENY\n  rules:\n  - from:\n    - source: {ipBlocks: [\"192.0.2.0/24\"], remoteIpBlocks: [\"192.0.2.0/24\"]}\n",
            // One of two sources is not address-only.
            "  action: DENY\n  rules:\n  - from:\n    - source: {ipBlocks: [\"192.0.2.0/24\"]}\n    - source: {principals: [\"cluster.local/ns/a/sa/b\"]}\n",
            // ALLOW and AUDIT are not drops.
            "  action: ALLOW\n  rules:\n  - from:\n    - source: {ipBlocks: [\"192.0.2.0/24\"]}\n",
            "  action: AUDIT\n  rules:\n  - from:\n    - source: {ipBlocks: [\"192.0.2.0/24\"]}\n",
            // An empty rule denies everything, not by source.
            "  action: DENY\n  rules:\n  - {}\n",
        ] {
            let yaml = format!("{PODS}{}", policy("p", spec));
            assert_eq!(
                kernel_deny_rules(&snapshot(&yaml), Some("node-a")),
                vec![],
                "{spec}"
            );
        }
        // In a policy with a qualifying and a non-qualifying rule, the
        // qualifying one is dropped in the kernel.
        let yaml = format!(
            "{PODS}{}",
            policy(
                "mixed",
                "  action: DENY\n  rules:\n  - from:\n    - source: {ipBlocks: [\"192.0.2.0/24\"]}\n  - to:\n    - operation: {ports: [\"80\"]}\n"
            )
        );
        assert_eq!(
            kernel_deny_rules(&snapshot(&yaml), Some("node-a")),
            vec![(p("192.0.2.0", 24), to(&["10.244.0.5", "10.244.0.6"]))]
        );
    }
}
