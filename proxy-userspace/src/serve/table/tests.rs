//! The table an incremental compile patches equals the one a full compile
//! builds from the same snapshot (issue 21): same service ports with the
//! same routes (cluster ids compared by the names they stand for), same
//! workloads, and every cluster id resolving to a live cluster with the
//! snapshot's endpoints — over a chain of endpoint, route and cluster
//! changes, each applied to the previous patched table.
use std::collections::BTreeMap;
use std::net::SocketAddr;

use strait_config::compile::{Applied, Incremental};
use strait_config::snapshot::MeshSnapshot;
use strait_config::Resource;

use super::{compile, compile_incremental, Table};
use crate::upstream::cluster::Registry;

/// Service `svc{i}` (VIP 10.96.0.i, port 80) with `eps` endpoints at
/// 10.1.i.{1..}, a VirtualService for even `i` (timeout `t`s), and a
/// DestinationRule with a `v1` subset when `subset`.
fn service(i: usize, eps: usize, t: u32, subset: bool) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: default}}\nspec: {{clusterIP: 10.96.0.{i}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc{i}-1, namespace: default, labels: {{kubernetes.io/service-name: svc{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n"
    );
    for e in 1..=eps {
        y.push_str(&format!(
            "- {{addresses: [\"10.1.{i}.{e}\"], conditions: {{ready: true}}}}\n"
        ));
    }
    if i.is_multiple_of(2) {
        y.push_str(&format!("---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc{i}, namespace: default}}\nspec:\n  hosts: [svc{i}]\n  http:\n  - route: [{{destination: {{host: svc{i}}}}}]\n    timeout: {t}s\n"));
    }
    if subset {
        y.push_str(&format!("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc{i}, namespace: default}}\nspec:\n  host: svc{i}\n  subsets: [{{name: v1, labels: {{app: x}}}}]\n"));
    }
    y
}

fn load(files: &[String]) -> Vec<Vec<Resource>> {
    files
        .iter()
        .enumerate()
        .map(|(i, y)| {
            let l = strait_config::load::load_str(y, &format!("f{i}.yaml"));
            assert!(!l.has_errors(), "{:?}", l.diagnostics);
            l.resources
        })
        .collect()
}

/// The table as a user of it sees it: each service port's host, port,
/// protocol and routes (ids replaced by cluster names), each cluster
/// name's live endpoints, the workloads.
fn render(
    t: &Table,
) -> (
    BTreeMap<SocketAddr, String>,
    BTreeMap<String, Vec<String>>,
    String,
) {
    let names = |s: String| -> String {
        let mut out = String::new();
        let mut rest = s.as_str();
        while let Some(i) = rest.find("ClusterId(") {
            out.push_str(&rest[..i]);
            let tail = &rest[i + "ClusterId(".len()..];
            let end = tail.find(')').expect("closing parenthesis");
            let n: usize = tail[..end].parse().expect("an id");
            let (_, name) = t
                .routes
                .clusters
                .iter()
                .find(|(id, _)| id.index() == n)
                .expect("every id a route names is in the table");
            out.push_str(name);
            rest = &tail[end + 1..];
        }
        out.push_str(rest);
        out
    };
    let services = t
        .routes
        .services
        .iter()
        .map(|(k, sp)| {
            let text = format!("{} {} {:?} {:?}", sp.host, sp.port, sp.protocol, sp.routes);
            (*k, names(text))
        })
        .collect();
    let clusters = t
        .routes
        .clusters
        .iter()
        .map(|(id, name)| {
            let c = t.cluster(id).expect("every id resolves to a live cluster");
            assert_eq!(&c.name, name, "id {id:?} stands for another cluster");
            let eps = c.endpoints.iter().map(|e| e.addr.to_string()).collect();
            (name.to_string(), eps)
        })
        .collect();
    let workloads: BTreeMap<_, _> = t
        .routes
        .workloads
        .iter()
        .map(|(ip, w)| (*ip, format!("{w:?}")))
        .collect();
    (services, clusters, format!("{workloads:?}"))
}

#[test]
fn an_incrementally_patched_table_equals_a_full_rebuild() {
    let n = 12;
    let mut files: Vec<String> = (0..n).map(|i| service(i, 3, 5, false)).collect();
    let registry = Registry::new();
    let all = |f: &[Vec<Resource>]| f.iter().flatten().cloned().collect::<Vec<_>>();
    let mut res = load(&files);
    let (mut inc, mut snap, _) = Incremental::compile(&all(&res));
    let (mut table, prepared) = super::compile_with(&snap, &registry).unwrap();
    registry.commit(&prepared);
    // (file, new text): endpoints move, come and go; a route changes; a
    // DestinationRule adds and removes a subset cluster; a service goes
    // and comes back.
    let edits: Vec<(usize, Option<String>)> = vec![
        (3, Some(service(3, 4, 5, false))),
        (4, Some(service(4, 1, 5, false))),
        (4, Some(service(4, 2, 7, false))),
        (5, Some(service(5, 3, 5, true))),
        (6, Some(service(6, 3, 9, true))),
        (5, Some(service(5, 0, 5, false))),
        (7, None),
        (7, Some(service(7, 2, 5, false))),
        (8, Some(service(8, 5, 5, false))),
        (4, Some(service(4, 2, 9, false))),
        (3, Some(service(3, 2, 5, false))),
        (9, Some(service(9, 1, 5, false))),
    ];
    let mut incremental_steps = 0;
    for (f, text) in edits {
        let before = res[f].clone();
        match text {
            Some(t) => files[f] = t,
            None => files[f] = String::new(),
        }
        res = load(&files);
        let old: MeshSnapshot = snap.clone();
        // What a file store names as changed: the resources that differ.
        let removed: Vec<Resource> = before
            .iter()
            .filter(|r| !res[f].iter().any(|n| n.object == r.object))
            .cloned()
            .collect();
        let added: Vec<Resource> = res[f]
            .iter()
            .filter(|r| !before.iter().any(|o| o.object == r.object))
            .cloned()
            .collect();
        let (diff, how) = inc.apply(&mut snap, &all(&res), Some((&removed, &added)));
        if matches!(how, Applied::Incremental) {
            incremental_steps += 1;
        }
        assert_eq!(diff, strait_config::snapshot::diff(&old, &snap));
        let (next, prepared) = compile_incremental(&snap, &diff, &table, &registry).unwrap();
        registry.commit(&prepared);
        let full = compile(&snap).unwrap();
        let (a, b) = (render(&next), render(&full));
        assert_eq!(a.0, b.0, "service ports after editing file {f}");
        assert_eq!(a.1, b.1, "clusters after editing file {f}");
        assert_eq!(a.2, b.2, "workloads after editing file {f}");
        // The registry holds exactly the snapshot's clusters.
        for name in snap.clusters.keys() {
            assert!(
                registry.cluster(name).is_some(),
                "{name} not in the registry"
            );
        }
        table = next;
    }
    assert!(
        incremental_steps >= 4,
        "{incremental_steps} incremental steps"
    );
}
