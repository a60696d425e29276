use std::net::SocketAddr;
use std::sync::Arc;

use super::{compile, compile_incremental};
use crate::runtime::route::RouteAction;
use crate::runtime::table::{ClusterIds, Table};

/// Two services, `ratings` (one pod at `ratings_ip`) and `reviews`.
fn mesh(ratings_ip: &str) -> strait_config::snapshot::MeshSnapshot {
    let yaml = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: ratings, namespace: default}}
spec:
  clusterIP: 10.96.0.10
  selector: {{app: ratings}}
  ports: [{{name: http, port: 9080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: ratings-1, namespace: default, labels: {{app: ratings}}}}
status: {{podIP: {ratings_ip}}}
---
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: default}}
spec:
  clusterIP: 10.96.0.11
  selector: {{app: reviews}}
  ports: [{{name: http, port: 9080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-1, namespace: default, labels: {{app: reviews}}}}
status: {{podIP: 10.1.0.20}}
"#
    );
    let loaded = strait_config::load::load_str(&yaml, "t.yaml");
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    strait_config::compile(&loaded.resources).0
}

fn port(t: &Table, vip: &str) -> Arc<crate::runtime::table::ServicePort> {
    t.services[&vip.parse::<SocketAddr>().unwrap()].clone()
}

fn forward_cluster(t: &Table, vip: &str) -> String {
    let sp = port(t, vip);
    let RouteAction::Forward(w) = &sp.routes.http[0].action else {
        panic!("default route forwards")
    };
    t.clusters
        .name(w.destinations[0].cluster)
        .expect("id resolves")
        .to_string()
}

/// An endpoint change keeps every route table and cluster id: only the
/// live cluster behind the id is rebuilt (by `upstream`), so a
/// Kubernetes endpoint churn costs no route recompilation.
#[test]
fn an_endpoint_change_keeps_route_tables_and_ids() {
    let old = mesh("10.1.0.5");
    let new = mesh("10.1.0.6");
    let diff = strait_config::snapshot::diff(&old, &new);
    assert!(!diff.clusters.changed.is_empty(), "{diff:?}");
    let before = compile(&old).unwrap();
    let after = compile_incremental(&new, &diff, &before).unwrap();
    for vip in ["10.96.0.10:9080", "10.96.0.11:9080"] {
        assert!(
            Arc::ptr_eq(&port(&before, vip), &port(&after, vip)),
            "{vip}"
        );
    }
    for name in &diff.clusters.changed {
        assert_eq!(before.clusters.get(name), after.clusters.get(name));
        assert!(after.clusters.get(name).is_some());
    }
    assert_eq!(
        forward_cluster(&after, "10.96.0.10:9080"),
        "outbound|9080||ratings.default.svc.cluster.local"
    );
}

/// The incremental result routes like a full compile of the new snapshot.
#[test]
fn incremental_routes_like_a_full_compile() {
    let old = mesh("10.1.0.5");
    let new = mesh("10.1.0.7");
    let diff = strait_config::snapshot::diff(&old, &new);
    let inc = compile_incremental(&new, &diff, &compile(&old).unwrap()).unwrap();
    let full = compile(&new).unwrap();
    assert_eq!(inc.services.len(), full.services.len());
    for vip in ["10.96.0.10:9080", "10.96.0.11:9080"] {
        assert_eq!(forward_cluster(&inc, vip), forward_cluster(&full, vip));
    }
    let names = |ids: &ClusterIds| {
        let mut v: Vec<String> = ids.iter().map(|(_, n)| n.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&inc.clusters), names(&full.clusters));
}

/// Ids stay with their names; a removed name's id goes to the next new
/// name, so the per-id array does not grow with churn.
#[test]
fn cluster_ids_are_stable_and_reused() {
    let mut ids = ClusterIds::default();
    let (a, new_a) = ids.insert("a");
    let (b, _) = ids.insert("b");
    let (c, _) = ids.insert("c");
    assert!(new_a);
    assert_eq!(ids.insert("a"), (a, false));
    assert_eq!((a.index(), b.index(), c.index()), (0, 1, 2));
    assert_eq!(ids.remove("b"), Some(b));
    assert_eq!(ids.get("b"), None);
    assert_eq!(ids.name(b), None);
    let (d, new_d) = ids.insert("d");
    assert!(new_d);
    assert_eq!(d, b, "the freed id is reused");
    assert_eq!(ids.name(d).map(|n| &**n), Some("d"));
    assert_eq!(ids.get("c"), Some(c));
    assert_eq!((ids.len(), ids.slots()), (3, 3));
    assert_eq!(ids.remove("nope"), None);
}
