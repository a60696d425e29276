//! Large inputs: compilation is spread over the cores above a few hundred
//! services (see `compile/par.rs`), and the Kubernetes kinds that repeat
//! most (Deployment, EndpointSlice) are kept slim after parsing. These
//! tests check that neither changes what a user sees.
use std::fmt::Write;
use std::net::IpAddr;

use strait_config::load::load_str;
use strait_config::snapshot::L4Mode;
use strait_config::{compile, Level};

/// Enough services for every parallel phase to split its work.
const SERVICES: usize = 700;

/// `n` services `svcI` in `ns{I % 7}`, each with an EndpointSlice of two
/// pods (one per Deployment `svcI-v1` / `svcI-v2`), a VirtualService on
/// every third service and a DestinationRule with subsets v1 and v2.
fn mesh(n: usize) -> String {
    let mut y = String::new();
    for i in 0..n {
        let ns = format!("ns{}", i % 7);
        let name = format!("svc{i}");
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  clusterIP: 10.96.{}.{}\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n---\n",
            i / 256,
            i % 256
        );
        let _ = write!(
            y,
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-x\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n"
        );
        for v in 1..=2 {
            let _ = write!(
                y,
                "- addresses: [\"10.1.{}.{}\"]\n  conditions: {{ready: true}}\n  zone: z{v}\n  targetRef: {{kind: Pod, name: {name}-v{v}-abc}}\n",
                i / 128,
                (i % 128) * 2 + v - 1
            );
        }
        y.push_str("---\n");
        for v in 1..=2 {
            let _ = write!(
                y,
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}-v{v}, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: {name}, version: v{v}}}}}\n  template:\n    metadata: {{labels: {{app: {name}, version: v{v}}}}}\n    spec: {{serviceAccountName: sa-{name}, containers: [{{name: app}}]}}\n---\n"
            );
        }
        if i % 3 == 0 {
            let _ = write!(
                y,
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{name}]\n  http:\n  - route:\n    - destination: {{host: {name}, subset: v2}}\n---\n"
            );
        }
        let _ = write!(
            y,
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  host: {name}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---\n"
        );
    }
    y
}

#[test]
fn a_large_mesh_compiles_every_service_whatever_the_order() {
    let loaded = load_str(&mesh(SERVICES), "mesh.yaml");
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics.first());
    let (snap, diags) = compile(&loaded.resources);
    assert!(diags.iter().all(|d| d.level != Level::Error), "{diags:?}");
    assert_eq!(snap.services.len(), SERVICES);
    assert_eq!(snap.clusters.len(), 3 * SERVICES);
    assert_eq!(snap.workloads.len(), 2 * SERVICES);
    assert_eq!(snap.l4.len(), SERVICES);
    for i in 0..SERVICES {
        let host = format!("svc{i}.ns{}.svc.cluster.local", i % 7);
        let all = &snap.clusters[&format!("outbound|80||{host}")].endpoints;
        assert_eq!(all.len(), 2, "{host}");
        for v in 1..=2 {
            let c = &snap.clusters[&format!("outbound|80|v{v}|{host}")];
            assert_eq!(c.endpoints.len(), 1, "{host} v{v}");
            let e = &c.endpoints[0];
            let ip: IpAddr = format!("10.1.{}.{}", i / 128, (i % 128) * 2 + v - 1)
                .parse()
                .unwrap();
            assert_eq!(e.addr.ip(), ip);
            assert_eq!(e.addr.port(), 8080);
            assert_eq!(e.labels["version"], format!("v{v}"));
            assert_eq!(e.service_account.as_deref(), Some(&*format!("sa-svc{i}")));
            assert_eq!(&*e.namespace, format!("ns{}", i % 7));
            assert_eq!(&*e.locality, format!("/z{v}"));
            let w = &snap.workloads[&ip];
            assert_eq!(w.services, std::slice::from_ref(&host));
            assert_eq!(w.name, format!("svc{i}-v{v}-abc"));
        }
        let routes = snap.routes_for(&host, 80).unwrap();
        let expect = if i % 3 == 0 { "v2" } else { "" };
        assert_eq!(routes.http[0].route[0].subset, expect, "{host}");
        let l4 = snap
            .l4_service(
                format!("10.96.{}.{}", i / 256, i % 256).parse().unwrap(),
                80,
                strait_config::snapshot::L4Protocol::Tcp,
            )
            .unwrap();
        assert_eq!(l4.host, host);
        assert_eq!(l4.backends.len(), 2);
        let mode = if i % 3 == 0 {
            L4Mode::Redirect
        } else {
            L4Mode::L4
        };
        assert_eq!(l4.mode, mode, "{host}");
    }
    // Resource order does not matter (and the split over cores neither).
    let mut reversed = loaded.resources.clone();
    reversed.reverse();
    let (again, _) = compile(&reversed);
    assert!(again == snap, "the snapshot depends on resource order");
}

#[test]
fn slim_kubernetes_kinds_keep_kubernetes_schema_errors() {
    // Type errors anywhere in the document, also in fields Strait drops
    // (replicas, container ports, hints), reject the resource with
    // k8s-openapi's message, as before the slimming.
    let cases = [
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: ns}\nspec:\n  selector: {}\n  template: {spec: {containers: [{name: app, ports: [{containerPort: http}]}]}}\n",
            "Deployment/ns/d",
            "spec.template.spec.containers[0].ports[0].containerPort",
            "invalid type: string \"http\", expected i32",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: ns}\nspec:\n  replicas: many\n  selector: {}\n  template: {spec: {containers: []}}\n",
            "Deployment/ns/d",
            "spec.replicas",
            "invalid type: string \"many\", expected i32",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, namespace: ns}\naddressType: IPv4\nendpoints:\n- addresses: [10.0.0.1]\n  conditions: {ready: yes please}\n",
            "EndpointSlice/ns/s",
            "endpoints[0].conditions.ready",
            "invalid type: string \"yes please\", expected a boolean",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, namespace: ns}\naddressType: IPv4\nendpoints:\n- addresses: [10.0.0.1]\n  hints: 3\n",
            "EndpointSlice/ns/s",
            "endpoints[0].hints",
            "invalid type: integer `3`, expected",
        ),
    ];
    for (yaml, key, field, message) in cases {
        let loaded = load_str(yaml, "k.yaml");
        assert!(loaded.resources.is_empty(), "{yaml}");
        let d = &loaded.diagnostics[0];
        assert_eq!(d.resource.as_deref(), Some(key), "{yaml}");
        assert_eq!(d.field.as_deref(), Some(field), "{yaml}");
        assert!(d.message.contains(message), "{yaml}: {}", d.message);
        assert_eq!(d.origin.as_ref().unwrap().file, "k.yaml");
    }
}
