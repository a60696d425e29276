//! Live upstream state across config swaps (issue 21): pooled upstream
//! connections, outlier ejections and circuit-breaker counters belong to
//! the cluster and endpoint, not to the snapshot, so reloading the config
//! (here: editing an unrelated service) changes none of them; removing an
//! endpoint lets the requests in flight on it finish. HTTP/1.1 and HTTP/2
//! upstreams.
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::client::Client;
use support::MeshBuilder;

#[derive(Clone, Copy, Debug)]
enum Proto {
    H1,
    H2,
}

impl Proto {
    /// The service port name (Istio's protocol selection).
    fn port_name(self) -> &'static str {
        match self {
            Proto::H1 => "http",
            Proto::H2 => "http2",
        }
    }

    fn client(self) -> Client {
        match self {
            Proto::H1 => Client::http1(),
            Proto::H2 => Client::http2(),
        }
    }
}

/// `ratings` (the service under load, pods as given) and `other` (the
/// unrelated service the reloads edit).
async fn two_services(proto: Proto, pods: &[support::Pod<'_>]) -> (support::Mesh, String) {
    let mut b = MeshBuilder::new();
    b.service("ratings", 9080, proto.port_name(), pods).await;
    b.service("other", 8080, "http", &[("other-v1", &[])]).await;
    let mesh = b.start().await;
    let base = mesh.yaml.clone();
    (mesh, base)
}

/// A DestinationRule on `other` that differs with `i` (so each reload
/// really changes the snapshot), plus `ratings_istio`.
fn reload_yaml(i: usize, ratings_istio: &str) -> String {
    let http = format!("{{maxRequestsPerConnection: {}}}", i + 1);
    let other = support::yaml::http_pool_rule("other", &http);
    format!("{other}---\n{ratings_istio}")
}

async fn reloads_keep_upstream_connections(proto: Proto) {
    let (mut mesh, base) = two_services(proto, &[("ratings-v1", &[])]).await;
    let url = mesh.url("ratings", "/");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    // HTTP/1.1: one client sending back to back needs one upstream
    // connection; HTTP/2: every stream shares one.
    let loops = match proto {
        Proto::H1 => 1,
        Proto::H2 => 4,
    };
    let mut tasks = Vec::new();
    for _ in 0..loops {
        let (url, stop, done, c) = (url.clone(), stop.clone(), done.clone(), proto.client());
        tasks.push(tokio::spawn(async move {
            let mut failures = 0;
            while !stop.load(Ordering::Relaxed) {
                if c.get(&url, &[]).await.status != 200 {
                    failures += 1;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    // Warm up: every loop has had its connection.
    while done.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let backend = mesh.backend("ratings", "ratings-v1");
    let before = backend.accepted();
    assert!(before >= 1);
    let served_before = done.load(Ordering::Relaxed);
    for i in 0..100 {
        mesh.replace_istio(&base, &reload_yaml(i, ""));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // Some load after the last reload too.
    let target = done.load(Ordering::Relaxed) + 20;
    while done.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            0,
            "every request during the reloads got 200"
        );
    }
    let backend = mesh.backend("ratings", "ratings-v1");
    assert!(done.load(Ordering::Relaxed) > served_before + 20);
    assert_eq!(
        backend.accepted(),
        before,
        "{proto:?}: 100 reloads of an unrelated service opened no new upstream connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_of_an_unrelated_service_keep_h1_upstream_connections() {
    reloads_keep_upstream_connections(Proto::H1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_of_an_unrelated_service_keep_h2_upstream_connections() {
    reloads_keep_upstream_connections(Proto::H2).await;
}

const OUTLIER: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: MAXPCT}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - retries: {attempts: 0}
    route: [{destination: {host: ratings}}]
";

async fn ejection_survives_reloads(proto: Proto) {
    let (mut mesh, base) = two_services(proto, &[("ratings-a", &[]), ("ratings-b", &[])]).await;
    let istio = OUTLIER.replace("MAXPCT", "50");
    mesh.replace_istio(&base, &reload_yaml(0, &istio));
    let c = proto.client();
    mesh.backend("ratings", "ratings-a").fail_next(1000, 500);
    let url = mesh.url("ratings", "/");
    let mut errors = 0;
    for _ in 0..10 {
        if c.get(&url, &[]).await.status == 500 {
            errors += 1;
        }
    }
    assert_eq!(errors, 2, "{proto:?}: two consecutive 5xx eject ratings-a");
    // Reloads: the unrelated service, then ratings' own DestinationRule
    // (same endpoints, same pools: the endpoints carry on).
    for i in 1..5 {
        mesh.replace_istio(&base, &reload_yaml(i, &istio));
    }
    mesh.replace_istio(&base, &reload_yaml(9, &OUTLIER.replace("MAXPCT", "60")));
    for _ in 0..20 {
        let r = c.get(&url, &[]).await;
        assert_eq!(r.status, 200, "{proto:?}: ratings-a is still ejected");
        assert_eq!(r.served_by(), Some("ratings-b"));
    }
    assert_eq!(mesh.backend("ratings", "ratings-a").hits(), 2);
}

#[tokio::test]
async fn an_ejected_h1_endpoint_stays_ejected_across_reloads() {
    ejection_survives_reloads(Proto::H1).await;
}

#[tokio::test]
async fn an_ejected_h2_endpoint_stays_ejected_across_reloads() {
    ejection_survives_reloads(Proto::H2).await;
}

/// One request in flight fills the breaker; after a reload the next one
/// still overflows (one breaker counts both), and the first finishes.
async fn one_breaker_across_a_swap(proto: Proto) {
    let (mut mesh, base) = two_services(proto, &[("ratings-v1", &[])]).await;
    // HTTP/1.1: one connection, no queue; HTTP/2: one request in flight.
    let limits = match proto {
        Proto::H1 => "tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1}",
        Proto::H2 => "http: {http2MaxRequests: 1}",
    };
    let dr = format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings, namespace: default}}
spec:
  host: ratings
  trafficPolicy:
    connectionPool:
      {limits}
"
    );
    mesh.replace_istio(&base, &reload_yaml(0, &dr));
    let url = mesh.url("ratings", "/delay/1500");
    let mut slow = Vec::new();
    // HTTP/1.1: one on the connection, one pending; HTTP/2: one in flight.
    let fill = match proto {
        Proto::H1 => 2,
        Proto::H2 => 1,
    };
    for _ in 0..fill {
        let (url, c) = (url.clone(), proto.client());
        slow.push(tokio::spawn(async move { c.get(&url, &[]).await }));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let c = proto.client();
    let r = c.get(&mesh.url("ratings", "/"), &[]).await;
    assert_eq!(
        r.status, 503,
        "{proto:?}: the breaker is full before the swap"
    );
    for i in 1..4 {
        mesh.replace_istio(&base, &reload_yaml(i, &dr));
    }
    let r = c.get(&mesh.url("ratings", "/"), &[]).await;
    assert_eq!(
        r.status, 503,
        "{proto:?}: after the swap the same breaker still counts the request in flight"
    );
    assert!(r.body.contains("overflow"), "{}", r.body);
    for s in slow {
        assert_eq!(
            s.await.unwrap().status,
            200,
            "{proto:?}: admitted ones finish"
        );
    }
    assert_eq!(c.get(&mesh.url("ratings", "/"), &[]).await.status, 200);
}

#[tokio::test]
async fn one_h1_circuit_breaker_across_a_swap() {
    one_breaker_across_a_swap(Proto::H1).await;
}

#[tokio::test]
async fn one_h2_circuit_breaker_across_a_swap() {
    one_breaker_across_a_swap(Proto::H2).await;
}

/// The YAML without the documents that mention `needle`.
fn without(yaml: &str, needle: &str) -> String {
    yaml.split("---\n")
        .filter(|doc| !doc.contains(needle))
        .collect::<Vec<_>>()
        .join("---\n")
}

async fn removed_endpoint_drains(proto: Proto) {
    let (mesh, base) = two_services(proto, &[("ratings-a", &[]), ("ratings-b", &[])]).await;
    let url = mesh.url("ratings", "/delay/1000");
    let mut slow = Vec::new();
    for _ in 0..4 {
        let (url, c) = (url.clone(), proto.client());
        slow.push(tokio::spawn(async move { c.get(&url, &[]).await }));
    }
    // Wait until both backends have requests in flight.
    let a = mesh.backend("ratings", "ratings-a");
    let b = mesh.backend("ratings", "ratings-b");
    for _ in 0..200 {
        if a.hits() > 0 && b.hits() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(a.hits() > 0 && b.hits() > 0, "{proto:?}: both pods busy");
    let snap = support::compile(&without(&base, "name: ratings-a,"));
    mesh.proxy.update(&snap).expect("runtime table builds");
    let mut by = Vec::new();
    for s in slow {
        let r = s.await.unwrap();
        assert_eq!(r.status, 200, "{proto:?}: in-flight requests finish");
        by.push(r.served_by().unwrap().to_owned());
    }
    assert!(by.iter().any(|s| s == "ratings-a"), "{by:?}");
    let c = proto.client();
    let hits_a = a.hits();
    for _ in 0..10 {
        let r = c.get(&mesh.url("ratings", "/"), &[]).await;
        assert_eq!(r.served_by(), Some("ratings-b"));
    }
    assert_eq!(
        a.hits(),
        hits_a,
        "{proto:?}: no new request to the removed pod"
    );
    // Drained: its upstream connections close.
    for _ in 0..300 {
        if a.open_connections() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        a.open_connections(),
        0,
        "{proto:?}: the removed endpoint's pool closed its connections"
    );
    assert!(b.open_connections() > 0, "ratings-b keeps its pool");
}

#[tokio::test]
async fn removing_an_h1_endpoint_lets_its_in_flight_requests_finish() {
    removed_endpoint_drains(Proto::H1).await;
}

#[tokio::test]
async fn removing_an_h2_endpoint_lets_its_in_flight_requests_finish() {
    removed_endpoint_drains(Proto::H2).await;
}

/// `Proxy::apply_diff`: removing one pod of `ratings` rebuilds ratings'
/// cluster and route table only; `other`'s service port and cluster are
/// the very same objects, and traffic follows the new endpoint set.
#[tokio::test]
async fn a_diff_rebuilds_only_what_it_names() {
    let (mesh, base) = two_services(Proto::H1, &[("ratings-a", &[]), ("ratings-b", &[])]).await;
    let old = support::compile(&base);
    let new = support::compile(&without(&base, "name: ratings-a,"));
    let diff = strait_config::snapshot::diff(&old, &new);
    assert_eq!(diff.clusters.changed.len(), 1, "{diff:?}");
    let other_vip = mesh.service("other").vip;
    let before = mesh.proxy.table();
    let other_port = |t: &strait::serve::Table| {
        t.routes.services[&std::net::SocketAddr::new(other_vip, 8080)].clone()
    };
    let counts = mesh.proxy.rebuild_counts();
    let rebuilt = mesh.proxy.apply_diff(&new, &diff).expect("applies");
    assert_eq!(rebuilt, 1);
    let built = mesh.proxy.rebuild_counts();
    assert_eq!(
        built.route_tables, counts.route_tables,
        "no route table rebuilt"
    );
    assert_eq!(
        built.policy_tables, counts.policy_tables,
        "no policy table built"
    );
    assert_eq!(built.clusters, counts.clusters + 1);
    let after = mesh.proxy.table();
    assert!(Arc::ptr_eq(&other_port(&before), &other_port(&after)));
    let name = &diff.clusters.changed[0];
    let live = |t: &strait::serve::Table, n: &str| t.cluster_named(n).expect("cluster").clone();
    assert!(!Arc::ptr_eq(&live(&before, name), &live(&after, name)));
    // The changed cluster keeps its id: routes naming it were not rebuilt.
    assert_eq!(
        before.routes.clusters.get(name),
        after.routes.clusters.get(name)
    );
    let untouched: Vec<_> = before
        .clusters_by_name()
        .into_iter()
        .map(|(k, _)| k.clone())
        .filter(|k| &**k != name.as_str())
        .collect();
    assert!(!untouched.is_empty());
    for k in untouched {
        assert!(Arc::ptr_eq(&live(&before, &k), &live(&after, &k)), "{k}");
    }
    let c = Client::http1();
    for _ in 0..6 {
        let r = c.get(&mesh.url("ratings", "/"), &[]).await;
        assert_eq!(r.served_by(), Some("ratings-b"));
    }
    assert_eq!(c.get(&mesh.url("other", "/"), &[]).await.status, 200);
}

/// The yaml of `api` (endpoints at `ips`, pods with `app: api`), `web`
/// (a VirtualService with `timeout`) and, with `policy`, an
/// AuthorizationPolicy on `app: api`.
fn policy_mesh(ips: &[&str], timeout: &str, policy: Option<&str>) -> String {
    let mut y = String::new();
    for (i, ip) in ips.iter().enumerate() {
        y.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: api-{i}, namespace: default, labels: {{app: api}}}}\nspec: {{containers: [{{name: c, image: i}}]}}\nstatus: {{phase: Running, podIP: {ip}}}\n---\n"
        ));
    }
    y.push_str("apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: default}\nspec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: 8080}]}\n---\n");
    y.push_str("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: api-1, namespace: default, labels: {kubernetes.io/service-name: api}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n");
    for ip in ips {
        y.push_str(&format!("- {{addresses: [\"{ip}\"]}}\n"));
    }
    y.push_str(&format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec: {{clusterIP: 10.96.0.11, ports: [{{name: http, port: 80}}]}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: default}}\nspec:\n  hosts: [web]\n  http:\n  - route: [{{destination: {{host: web}}}}]\n    timeout: {timeout}\n"));
    if let Some(method) = policy {
        y.push_str(&format!("---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: api, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: api}}}}\n  rules: [{{to: [{{operation: {{methods: [{method}]}}}}]}}]\n"));
    }
    y
}

/// Swapping in a new snapshot builds only what changed (counted by
/// `Proxy::rebuild_counts`): a route change on one service compiles that
/// service port's route table and no policy table; an endpoint change
/// compiles no route table, and a policy table only when policies exist
/// (the endpoints they guard changed); a policy change builds the policy
/// table and no route table.
#[test]
fn a_swap_builds_route_and_policy_tables_only_when_theirs_changed() {
    let step = |proxy: &strait::serve::Proxy, old: &str, new: &str| {
        let (old, new) = (support::compile(old), support::compile(new));
        let diff = strait_config::snapshot::diff(&old, &new);
        let before = proxy.rebuild_counts();
        proxy.apply_diff(&new, &diff).expect("applies");
        let after = proxy.rebuild_counts();
        (
            after.route_tables - before.route_tables,
            after.policy_tables - before.policy_tables,
        )
    };
    for policy in [None, Some("GET")] {
        let a = policy_mesh(&["10.1.0.1"], "1s", policy);
        let proxy = strait::serve::Proxy::new(&support::compile(&a)).unwrap();
        // A route of `web`: one route table, no policy table.
        let b = policy_mesh(&["10.1.0.1"], "2s", policy);
        assert_eq!(
            step(&proxy, &a, &b),
            (1, 0),
            "route change, policy {policy:?}"
        );
        // An endpoint of `api`: no route table; the policy table only
        // when there are policies.
        let c = policy_mesh(&["10.1.0.1", "10.1.0.2"], "2s", policy);
        let policy_tables = u64::from(policy.is_some());
        assert_eq!(
            step(&proxy, &b, &c),
            (0, policy_tables),
            "endpoint change, policy {policy:?}"
        );
        // The same snapshot again: nothing.
        assert_eq!(step(&proxy, &c, &c), (0, 0));
    }
    // A policy change: the policy table, no route table.
    let a = policy_mesh(&["10.1.0.1"], "1s", Some("GET"));
    let b = policy_mesh(&["10.1.0.1"], "1s", Some("POST"));
    let proxy = strait::serve::Proxy::new(&support::compile(&a)).unwrap();
    assert_eq!(step(&proxy, &a, &b), (0, 1));
}
