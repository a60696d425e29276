//! PeerAuthentication composed per workload with Istio's precedence, as
//! Istio's documentation describes it (security/authentication/authn-policy,
//! "Peer authentication" and the PeerAuthentication reference): workload
//! selector > namespace > root namespace, `UNSET` inheriting from the
//! parent, `portLevelMtls` by target port, PERMISSIVE when nothing is set.
//! And what the compiled snapshot does with it: the inbound table the
//! daemon enforces, and fail closed without a CA.
use std::net::IpAddr;

use strait_config::snapshot::{InboundWorkload, MtlsMode, PeerMtls};
use strait_config::{compile_with, CompileOptions, MeshSnapshot};

use MtlsMode::{Disable, Permissive, Strict};

/// Pods: `foo/httpbin` (10.0.0.1, app=httpbin), `foo/sleep` (10.0.0.2,
/// app=sleep), `bar/httpbin` (10.0.0.3), `istio-system/gw` (10.0.0.4,
/// app=gw), with a Service over the httpbins so they are workloads.
const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: httpbin, namespace: foo, labels: {app: httpbin}}
spec: {serviceAccountName: httpbin}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: sleep, namespace: foo, labels: {app: sleep}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: httpbin, namespace: bar, labels: {app: httpbin}}
status: {podIP: 10.0.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: gw, namespace: istio-system, labels: {app: gw}}
status: {podIP: 10.0.0.4}
---
";

fn pa(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n---\n"
    )
}

fn pa_at(ns: &str, name: &str, created: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: \"{created}\"}}\nspec:\n{spec}\n---\n"
    )
}

fn compiled(yaml: &str, enforced: bool) -> MeshSnapshot {
    let loaded = strait_config::load::load_str(&format!("{PODS}{yaml}"), "t.yaml");
    let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    compile_with(
        &loaded.resources,
        &CompileOptions {
            peer_authn_enforced: enforced,
        },
    )
    .0
}

fn mtls(snap: &MeshSnapshot, ip: &str) -> PeerMtls {
    let ip: IpAddr = ip.parse().unwrap();
    snap.inbound
        .get(&ip)
        .map(|i| i.mtls.clone())
        .unwrap_or_default()
}

fn ports(list: &[(u16, MtlsMode)]) -> std::collections::BTreeMap<u16, MtlsMode> {
    list.iter().copied().collect()
}

/// (pod IP, mode, port-level modes)
type Want = (&'static str, MtlsMode, Vec<(u16, MtlsMode)>);

#[test]
fn istio_documented_peer_authentication_precedence() {
    struct Case {
        what: &'static str,
        yaml: String,
        /// (pod IP, mode, ports)
        want: Vec<Want>,
    }
    let cases = vec![
        Case {
            what: "no policy: PERMISSIVE (Istio's default)",
            yaml: String::new(),
            want: vec![("10.0.0.1", Permissive, vec![]), ("10.0.0.3", Permissive, vec![])],
        },
        Case {
            what: "mesh-wide STRICT in the root namespace applies everywhere",
            yaml: pa("istio-system", "default", "  mtls: {mode: STRICT}"),
            want: vec![
                ("10.0.0.1", Strict, vec![]),
                ("10.0.0.3", Strict, vec![]),
                ("10.0.0.4", Strict, vec![]),
            ],
        },
        Case {
            what: "namespace PERMISSIVE overrides mesh STRICT in its namespace only",
            yaml: pa("istio-system", "default", "  mtls: {mode: STRICT}")
                + &pa("foo", "default", "  mtls: {mode: PERMISSIVE}"),
            want: vec![("10.0.0.1", Permissive, vec![]), ("10.0.0.3", Strict, vec![])],
        },
        Case {
            what: "workload DISABLE overrides namespace STRICT for the selected pod",
            yaml: pa("foo", "default", "  mtls: {mode: STRICT}")
                + &pa(
                    "foo",
                    "httpbin",
                    "  selector: {matchLabels: {app: httpbin}}\n  mtls: {mode: DISABLE}",
                ),
            want: vec![("10.0.0.1", Disable, vec![]), ("10.0.0.2", Strict, vec![])],
        },
        Case {
            // The reference's example: STRICT for the workload, port 8080
            // DISABLE.
            what: "portLevelMtls: one port DISABLE on a STRICT workload",
            yaml: pa(
                "foo",
                "finance",
                "  selector: {matchLabels: {app: httpbin}}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    8080: {mode: DISABLE}",
            ),
            want: vec![
                ("10.0.0.1", Strict, vec![(8080, Disable)]),
                ("10.0.0.2", Permissive, vec![]),
            ],
        },
        Case {
            // The reference's second example: the workload policy has no
            // mode, so it inherits the namespace's STRICT; port 8080 is
            // DISABLE.
            what: "workload mtls UNSET inherits the namespace; portLevelMtls still applies",
            yaml: pa("foo", "default", "  mtls: {mode: STRICT}")
                + &pa(
                    "foo",
                    "httpbin",
                    "  selector: {matchLabels: {app: httpbin}}\n  portLevelMtls:\n    8080: {mode: DISABLE}",
                ),
            want: vec![("10.0.0.1", Strict, vec![(8080, Disable)])],
        },
        Case {
            what: "namespace UNSET inherits the mesh; port-level UNSET inherits the workload",
            yaml: pa("istio-system", "default", "  mtls: {mode: STRICT}")
                + &pa("foo", "default", "  mtls: {mode: UNSET}")
                + &pa(
                    "foo",
                    "httpbin",
                    "  selector: {matchLabels: {app: httpbin}}\n  portLevelMtls:\n    8080: {mode: UNSET}\n    9090: {mode: PERMISSIVE}",
                ),
            want: vec![
                ("10.0.0.1", Strict, vec![(8080, Strict), (9090, Permissive)]),
                ("10.0.0.2", Strict, vec![]),
            ],
        },
        Case {
            what: "a selector policy in the root namespace is ignored (Istio)",
            yaml: pa(
                "istio-system",
                "by-label",
                "  selector: {matchLabels: {app: httpbin}}\n  mtls: {mode: STRICT}",
            ),
            want: vec![
                ("10.0.0.1", Permissive, vec![]),
                ("10.0.0.3", Permissive, vec![]),
            ],
        },
        Case {
            what: "a policy in another namespace does not apply",
            yaml: pa("bar", "default", "  mtls: {mode: STRICT}"),
            want: vec![("10.0.0.1", Permissive, vec![]), ("10.0.0.3", Strict, vec![])],
        },
        Case {
            what: "two namespace policies: the oldest wins",
            yaml: pa_at("foo", "b-old", "2024-01-01T00:00:00Z", "  mtls: {mode: DISABLE}")
                + &pa_at("foo", "a-new", "2025-01-01T00:00:00Z", "  mtls: {mode: STRICT}"),
            want: vec![("10.0.0.1", Disable, vec![])],
        },
    ];
    for c in cases {
        let snap = compiled(&c.yaml, true);
        for (ip, mode, p) in &c.want {
            let got = mtls(&snap, ip);
            assert_eq!(
                got,
                PeerMtls {
                    mode: *mode,
                    ports: ports(p)
                },
                "{}: pod {ip}",
                c.what
            );
        }
    }
}

#[test]
fn mesh_config_root_namespace_scopes_mesh_wide_peer_authentication() {
    let mesh = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    rootNamespace: foo\n---\n";
    let yaml = format!("{mesh}{}", pa("foo", "default", "  mtls: {mode: STRICT}"));
    let snap = compiled(&yaml, true);
    assert_eq!(
        mtls(&snap, "10.0.0.3").mode,
        Strict,
        "foo is the root namespace"
    );
    let snap = compiled(
        &pa("istio-system", "default", "  mtls: {mode: STRICT}"),
        true,
    );
    assert_eq!(mtls(&snap, "10.0.0.3").mode, Strict);
    let snap = compiled(
        &format!(
            "{mesh}{}",
            pa("istio-system", "default", "  mtls: {mode: STRICT}")
        ),
        true,
    );
    assert_eq!(
        mtls(&snap, "10.0.0.3").mode,
        Permissive,
        "istio-system is not the root namespace when the mesh config says foo"
    );
}

#[test]
fn strict_fails_closed_without_a_ca_and_is_left_to_the_kernel_with_one() {
    let yaml = pa("foo", "default", "  mtls: {mode: STRICT}");
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    let without = compiled(&yaml, false);
    assert!(
        without.deny.contains_key(&ip),
        "without a CA STRICT fails closed: {:?}",
        without.deny
    );
    let with = compiled(&yaml, true);
    assert!(with.deny.is_empty(), "{:?}", with.deny);
    assert_eq!(
        with.inbound.get(&ip),
        Some(&InboundWorkload {
            mtls: PeerMtls {
                mode: Strict,
                ports: Default::default()
            },
            policy: false,
            l7: false,
        })
    );
    // DISABLE and PERMISSIVE never failed closed.
    let off = compiled(&pa("foo", "default", "  mtls: {mode: DISABLE}"), false);
    assert!(off.deny.is_empty());
}

#[test]
fn policies_mark_the_workloads_whose_plaintext_goes_through_the_inbound_listener() {
    let ap = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-sleep, namespace: foo}\nspec:\n  selector: {matchLabels: {app: httpbin}}\n  action: DENY\n  rules: [{to: [{operation: {paths: [/admin]}}]}]\n---\n";
    let snap = compiled(ap, true);
    let get = |ip: &str| snap.inbound.get(&ip.parse::<IpAddr>().unwrap()).cloned();
    assert_eq!(
        get("10.0.0.1"),
        Some(InboundWorkload {
            mtls: PeerMtls::default(),
            policy: true,
            l7: true,
        })
    );
    assert_eq!(get("10.0.0.2"), None, "no policy, PERMISSIVE: not listed");
    assert_eq!(get("10.0.0.3"), None);
}
