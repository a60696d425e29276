//! Compilation: endpoints from every source, DestinationRule merging, L4
//! modes, host resolution, determinism and diff.
use std::net::{IpAddr, SocketAddr};

use strait_config::load::load_str;
use strait_config::snapshot::{
    HashKey, L4LoadBalancer, L4Mode, L4Protocol, LoadBalancer, MtlsMode, Protocol, SimpleLb,
};
use strait_config::{compile, diff, MeshSnapshot};

fn snap(yaml: &str) -> MeshSnapshot {
    let loaded = load_str(yaml, "t.yaml");
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let (s, diags) = compile(&loaded.resources);
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    s
}

const SVC: &str = "apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: 8080}
  - {name: grpc-api, port: 9090, targetPort: 9091}
  - {name: db, port: 3306, targetPort: 3306}
  - {name: dns, port: 53, protocol: UDP}
  - {name: web, port: 8000, appProtocol: kubernetes.io/h2c}
---
";

fn pod(name: &str, ip: &str, version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: reviews, version: {version}, topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: z1}}}}\nspec: {{serviceAccountName: bookinfo-reviews, containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}\nstatus: {{podIP: {ip}, phase: Running}}\n---\n"
    )
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn ports_get_istio_protocols() {
    let s = snap(SVC);
    let svc = &s.services["reviews.default.svc.cluster.local"];
    let protos: Vec<(u16, Protocol)> = svc.ports.iter().map(|p| (p.port, p.protocol)).collect();
    assert_eq!(
        protos,
        [
            (53, Protocol::Udp),
            (3306, Protocol::Unknown),
            (8000, Protocol::Http2),
            (9080, Protocol::Http),
            (9090, Protocol::Grpc),
        ]
    );
    let (found, port) = s
        .service_by_vip("10.96.0.10".parse().unwrap(), 9090)
        .unwrap();
    assert_eq!(found.host, "reviews.default.svc.cluster.local");
    assert_eq!(port.target_port, Some(9091));
    assert!(s.service_by_vip("10.96.0.10".parse().unwrap(), 1).is_none());
    // Unknown protocol: HTTP (sniffed) and TCP default routes both exist.
    let r = s.routes_for(&svc.host, 3306).unwrap();
    assert_eq!((r.http.len(), r.tcp.len()), (1, 1));
    let udp = s
        .l4_service("10.96.0.10".parse().unwrap(), 53, L4Protocol::Udp)
        .unwrap();
    assert_eq!(udp.mode, L4Mode::L4);
}

#[test]
fn endpoints_from_selected_pods_with_labels_locality_and_identity() {
    let yaml = format!(
        "{SVC}{}{}",
        pod("reviews-v1-a", "10.1.0.1", "v1"),
        pod("reviews-v2-b", "10.1.0.2", "v2")
    );
    let s = snap(&yaml);
    let c = &s.clusters["outbound|9080||reviews.default.svc.cluster.local"];
    let addrs: Vec<SocketAddr> = c.endpoints.iter().map(|e| e.addr).collect();
    assert_eq!(addrs, [addr("10.1.0.1:8080"), addr("10.1.0.2:8080")]);
    assert_eq!(&*c.endpoints[0].locality, "r1/z1");
    assert_eq!(
        c.endpoints[0].service_account.as_deref(),
        Some("bookinfo-reviews")
    );
    assert_eq!(c.endpoints[1].labels["version"], "v2");
    let w = s.workload("10.1.0.2".parse().unwrap()).unwrap();
    assert_eq!(w.services, ["reviews.default.svc.cluster.local"]);
}

#[test]
fn endpoint_slices_win_and_deployments_give_labels() {
    let yaml = format!(
        "{SVC}{}apiVersion: apps/v1
kind: Deployment
metadata: {{name: reviews-v3, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  template:
    metadata: {{labels: {{app: reviews, version: v3}}}}
    spec: {{serviceAccountName: sa3, containers: []}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-x
  namespace: default
  labels: {{kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{{name: http, port: 8080}}, {{name: grpc-api, port: 9091}}]
endpoints:
- addresses: [10.2.0.7]
  conditions: {{ready: true}}
  targetRef: {{kind: Pod, name: reviews-v3-5d8f-abcde}}
  zone: z9
- addresses: [10.2.0.8]
  conditions: {{ready: false}}
",
        pod("reviews-v1-a", "10.1.0.1", "v1")
    );
    let s = snap(&yaml);
    let c = &s.clusters["outbound|9090||reviews.default.svc.cluster.local"];
    let got: Vec<(SocketAddr, bool)> = c.endpoints.iter().map(|e| (e.addr, e.healthy)).collect();
    assert_eq!(
        got,
        [
            (addr("10.2.0.7:9091"), true),
            (addr("10.2.0.8:9091"), false)
        ]
    );
    assert_eq!(c.endpoints[0].labels["version"], "v3");
    assert_eq!(c.endpoints[0].service_account.as_deref(), Some("sa3"));
    assert_eq!(&*c.endpoints[0].locality, "/z9");
    let l4 = s
        .l4_service("10.96.0.10".parse().unwrap(), 9090, L4Protocol::Tcp)
        .unwrap();
    assert_eq!(l4.backends.len(), 2);
    assert!(!l4.backends[1].healthy);
}

#[test]
fn legacy_endpoints_object() {
    let yaml = format!(
        "{SVC}apiVersion: v1
kind: Endpoints
metadata: {{name: reviews, namespace: default}}
subsets:
- addresses: [{{ip: 10.3.0.1}}]
  notReadyAddresses: [{{ip: 10.3.0.2}}]
  ports: [{{name: http, port: 8080}}]
"
    );
    let s = snap(&yaml);
    let c = &s.clusters["outbound|9080||reviews.default.svc.cluster.local"];
    let got: Vec<(SocketAddr, bool)> = c.endpoints.iter().map(|e| (e.addr, e.healthy)).collect();
    assert_eq!(
        got,
        [
            (addr("10.3.0.1:8080"), true),
            (addr("10.3.0.2:8080"), false)
        ]
    );
}

#[test]
fn destination_rule_policy_merges_like_istio() {
    let yaml = format!(
        "{SVC}{}{}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {{simple: RANDOM}}
    connectionPool:
      tcp: {{maxConnections: 100, connectTimeout: 250ms}}
      http: {{http1MaxPendingRequests: 5}}
    portLevelSettings:
    - port: {{number: 9090}}
      loadBalancer: {{simple: ROUND_ROBIN}}
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
    trafficPolicy:
      loadBalancer:
        consistentHash: {{httpHeaderName: x-user}}
      outlierDetection: {{consecutive5xxErrors: 3, interval: 5s}}
",
        pod("reviews-v1-a", "10.1.0.1", "v1"),
        pod("reviews-v2-b", "10.1.0.2", "v2")
    );
    let s = snap(&yaml);
    let host = "reviews.default.svc.cluster.local";
    let c = |port: u16, subset: &str| &s.clusters[&format!("outbound|{port}|{subset}|{host}")];
    // Top level.
    assert_eq!(
        c(9080, "").load_balancer,
        LoadBalancer::Simple(SimpleLb::Random)
    );
    assert_eq!(c(9080, "").connection_pool.max_connections, 100);
    assert_eq!(c(9080, "").connection_pool.connect_timeout_ms, 250);
    assert_eq!(c(9080, "").connection_pool.http1_max_pending_requests, 5);
    assert_eq!(c(9080, "").connection_pool.http2_max_requests, u32::MAX);
    assert!(c(9080, "").outlier_detection.is_none());
    // Port level replaces all four parts and does not inherit.
    assert_eq!(
        c(9090, "").load_balancer,
        LoadBalancer::Simple(SimpleLb::RoundRobin)
    );
    assert_eq!(c(9090, "").connection_pool.max_connections, u32::MAX);
    // Subset overrides the parts it sets, keeps the rest.
    assert_eq!(
        c(9080, "v1").load_balancer,
        LoadBalancer::Simple(SimpleLb::Random)
    );
    let LoadBalancer::ConsistentHash(ch) = &c(9080, "v2").load_balancer else {
        panic!()
    };
    assert_eq!(ch.key, HashKey::HttpHeaderName("x-user".into()));
    assert_eq!(c(9080, "v2").connection_pool.max_connections, 100);
    let od = c(9080, "v2").outlier_detection.as_ref().unwrap();
    assert_eq!(
        (
            od.consecutive_5xx_errors,
            od.interval_ms,
            od.base_ejection_time_ms
        ),
        (3, 5000, 30000)
    );
    // Subset endpoints are filtered by labels.
    let v2: Vec<SocketAddr> = c(9080, "v2").endpoints.iter().map(|e| e.addr).collect();
    assert_eq!(v2, [addr("10.1.0.2:8080")]);
    // The L4 table follows the rule: HTTP pool limits need the proxy.
    let l4 = s
        .l4_service("10.96.0.10".parse().unwrap(), 9080, L4Protocol::Tcp)
        .unwrap();
    assert_eq!(l4.mode, L4Mode::Redirect);
    let l4 = s
        .l4_service("10.96.0.10".parse().unwrap(), 9090, L4Protocol::Tcp)
        .unwrap();
    assert_eq!(
        (l4.mode, l4.load_balancer),
        (L4Mode::L4, L4LoadBalancer::RoundRobin)
    );
}

#[test]
fn default_load_balancer_is_round_robin_and_least_request_is_chosen_by_name() {
    let dr = |lb: &str| {
        format!(
            "{SVC}{}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy: {{loadBalancer: {lb}}}
",
            pod("reviews-v1-a", "10.1.0.1", "v1")
        )
    };
    let lb = |yaml: &str| {
        snap(yaml).clusters["outbound|9080||reviews.default.svc.cluster.local"]
            .load_balancer
            .clone()
    };
    let rr = LoadBalancer::Simple(SimpleLb::RoundRobin);
    let least = LoadBalancer::Simple(SimpleLb::LeastRequest);
    assert_eq!(
        lb(&format!("{SVC}{}", pod("reviews-v1-a", "10.1.0.1", "v1"))),
        rr
    );
    assert_eq!(lb(&dr("{simple: UNSPECIFIED}")), rr);
    assert_eq!(lb(&dr("{simple: LEAST_REQUEST}")), least);
    assert_eq!(lb(&dr("{simple: LEAST_CONN}")), least);
}

#[test]
fn l4_mode_follows_routing_and_policy() {
    let base = format!("{SVC}{}", pod("reviews-v1-a", "10.1.0.1", "v1"));
    let vip: IpAddr = "10.96.0.10".parse().unwrap();
    let mode = |extra: &str| {
        let s = snap(&format!("{base}{extra}"));
        s.l4_service(vip, 9080, L4Protocol::Tcp).unwrap().mode
    };
    assert_eq!(mode(""), L4Mode::L4);
    assert_eq!(
        mode("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, port: {number: 9080}}\n"),
        L4Mode::Redirect
    );
    assert_eq!(
        mode("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n"),
        L4Mode::Redirect
    );
    assert_eq!(
        mode("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: default}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  rules:\n  - to:\n    - operation: {methods: [GET]}\n"),
        L4Mode::Redirect
    );
    // An L4-only policy (ports, namespaces) needs the proxy too: the
    // kernel path checks no policy, and nothing may bypass it.
    assert_eq!(
        mode("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: default}\nspec:\n  rules:\n  - from:\n    - source: {namespaces: [default]}\n"),
        L4Mode::Redirect
    );
    // A root-namespace policy with a selector applies in every namespace.
    assert_eq!(
        mode("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: istio-system}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  rules:\n  - to:\n    - operation: {ports: [\"9080\"]}\n"),
        L4Mode::Redirect
    );
    // A policy in another namespace does not.
    assert_eq!(
        mode("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: other}\nspec: {}\n"),
        L4Mode::L4
    );
}

#[test]
fn peer_authentication_precedence() {
    let s = snap(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: ns, namespace: legacy}\nspec: {mtls: {mode: PERMISSIVE}}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: wl, namespace: legacy}\nspec:\n  selector: {matchLabels: {app: old}}\n  mtls: {mode: DISABLE}\n  portLevelMtls: {8080: {mode: STRICT}}\n",
    );
    let labels = |app: &str| [("app".to_string(), app.to_string())].into_iter().collect();
    assert_eq!(
        s.policies.for_workload("default", &labels("x")).mtls,
        MtlsMode::Strict
    );
    assert_eq!(
        s.policies.for_workload("legacy", &labels("x")).mtls,
        MtlsMode::Permissive
    );
    let p = s.policies.for_workload("legacy", &labels("old"));
    assert_eq!(p.mtls, MtlsMode::Disable);
    assert_eq!(p.port_mtls[&8080], MtlsMode::Strict);
}

#[test]
fn short_names_resolve_in_the_resource_namespace_and_wildcards_match() {
    let s = snap(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext, namespace: team}\nspec:\n  hosts: [\"*.example.com\"]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: NONE\n---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: team}\nspec:\n  clusterIP: 10.96.1.1\n  ports: [{name: http, port: 80}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api, namespace: team}\nspec:\n  hosts: [api]\n  http:\n  - route:\n    - destination: {host: api}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ext, namespace: team}\nspec:\n  hosts: [\"*.example.com\"]\n  tls:\n  - match:\n    - sniHosts: [\"*.example.com\"]\n    route:\n    - destination: {host: www.example.com, port: {number: 443}}\n",
    );
    let r = s.routes_for("api.team.svc.cluster.local", 80).unwrap();
    assert_eq!(r.http[0].virtual_service, "team/api");
    assert_eq!(
        r.http[0].route[0].cluster,
        "outbound|80||api.team.svc.cluster.local"
    );
    let r = s.routes_for("*.example.com", 443).unwrap();
    assert_eq!(r.tls[0].matches[0].sni_hosts, ["*.example.com"]);
    assert_eq!(r.tls[0].route[0].cluster, "outbound|443||www.example.com");
}

#[test]
fn output_is_deterministic_and_diff_finds_changes() {
    let a = format!(
        "{SVC}{}{}",
        pod("reviews-v1-a", "10.1.0.1", "v1"),
        pod("reviews-v2-b", "10.1.0.2", "v2")
    );
    // Same resources, reversed document order: identical snapshot and JSON.
    let docs: Vec<&str> = a.split("---\n").filter(|d| !d.trim().is_empty()).collect();
    let reversed = docs
        .iter()
        .rev()
        .map(|d| format!("{d}---\n"))
        .collect::<String>();
    let (s1, s2) = (snap(&a), snap(&reversed));
    assert_eq!(s1, s2);
    assert_eq!(s1.to_json(), s2.to_json());
    assert!(diff(&s1, &s2).is_empty());
    // Round trip through JSON.
    let back: MeshSnapshot = serde_json::from_str(&s1.to_json()).unwrap();
    assert_eq!(back, s1);
    // Drop one pod: the clusters and kernel entries of that service change.
    let b = format!("{SVC}{}", pod("reviews-v1-a", "10.1.0.1", "v1"));
    let d = diff(&s1, &snap(&b));
    assert!(d.services.is_empty());
    assert_eq!(d.workloads.removed, ["10.1.0.2".parse::<IpAddr>().unwrap()]);
    assert!(d
        .clusters
        .changed
        .contains(&"outbound|9080||reviews.default.svc.cluster.local".to_string()));
    assert!(d
        .l4
        .changed
        .contains(&("10.96.0.10".parse().unwrap(), 9080, L4Protocol::Tcp)));
    assert!(d.routes.is_empty());
}

#[test]
fn sidecar_egress_and_export_to_limit_visibility() {
    let s = snap(
        "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: team}\nspec: {clusterIP: 10.96.2.1, ports: [{name: http, port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: other}\nspec: {clusterIP: 10.96.2.2, ports: [{name: http, port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: private\n  namespace: other\n  annotations: {networking.istio.io/exportTo: \".\"}\nspec: {clusterIP: 10.96.2.3, ports: [{name: http, port: 80}]}\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: team}\nspec:\n  egress:\n  - hosts: [\"./*\", \"istio-system/*\"]\n",
    );
    let none = Default::default();
    let (a, b, p) = (
        "a.team.svc.cluster.local",
        "b.other.svc.cluster.local",
        "private.other.svc.cluster.local",
    );
    assert!(s.visible("team", &none, a, 80));
    assert!(
        !s.visible("team", &none, b, 80),
        "not in the Sidecar's egress hosts"
    );
    assert!(s.visible("other", &none, b, 80), "no Sidecar in `other`");
    assert!(s.visible("other", &none, p, 80));
    assert!(!s.visible("third", &none, p, 80), "exportTo: .");
}

#[test]
fn delegate_rules_replace_the_root_rule() {
    let s = snap(&format!(
        "{SVC}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: root, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {{prefix: /api}}
    timeout: 3s
    delegate: {{name: api, namespace: team}}
  - route:
    - destination: {{host: reviews, port: {{number: 9080}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: team}}
spec:
  http:
  - match:
    - uri: {{prefix: /api/v1}}
    - uri: {{prefix: /other}}
    route:
    - destination: {{host: reviews.default.svc.cluster.local, subset: v1, port: {{number: 9080}}}}
  - route:
    - destination: {{host: backend, port: {{number: 80}}}}
"
    ));
    let r = s
        .routes_for("reviews.default.svc.cluster.local", 9080)
        .unwrap();
    let summary: Vec<(String, Vec<String>, String, Option<u64>)> = r
        .http
        .iter()
        .map(|h| {
            (
                h.virtual_service.clone(),
                h.matches.iter().map(|m| format!("{:?}", m.uri)).collect(),
                h.route[0].cluster.clone(),
                h.timeout_ms,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "team/api".to_string(),
                vec!["Some(Prefix(\"/api/v1\"))".to_string()],
                "outbound|9080|v1|reviews.default.svc.cluster.local".to_string(),
                Some(3000)
            ),
            (
                "team/api".to_string(),
                vec!["Some(Prefix(\"/api\"))".to_string()],
                "outbound|80||backend.team.svc.cluster.local".to_string(),
                Some(3000)
            ),
            (
                "default/root".to_string(),
                vec![],
                "outbound|9080||reviews.default.svc.cluster.local".to_string(),
                None
            ),
        ]
    );
}

#[test]
fn gateway_server_namespace_prefix_admits_only_that_namespace() {
    let vs = |ns: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  hosts: [web.example.com]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {{host: web, port: {{number: 80}}}}\n---\n")
    };
    let s = snap(&format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"shop/*.example.com\"]\n---\n{}{}",
        vs("shop"),
        vs("other")
    ));
    let vhosts = &s.gateways["istio-system/gw"].routes[&80];
    assert_eq!(vhosts.len(), 1);
    assert_eq!(vhosts[0].domains, ["web.example.com"]);
    assert_eq!(vhosts[0].routes.http.len(), 1);
    assert_eq!(vhosts[0].routes.http[0].virtual_service, "shop/web");
    assert_eq!(
        vhosts[0].routes.http[0].route[0].cluster,
        "outbound|80||web.shop.svc.cluster.local"
    );
}

#[test]
fn invalid_resources_among_thousands_are_rejected_alone_in_order() {
    // Enough resources that validation is spread over threads; the errors
    // must still name exactly the bad ones, in input order.
    let mut y = String::new();
    for i in 0..1500 {
        let port = if i == 3 || i == 1400 { 0 } else { 80 };
        y.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: default}}\nspec:\n  clusterIP: 10.96.{}.{}\n  ports: [{{name: http, port: {port}}}]\n---\n",
            i / 256,
            i % 256
        ));
    }
    let loaded = load_str(&y, "t.yaml");
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let (s, diags) = compile(&loaded.resources);
    let errors: Vec<_> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| (d.resource.clone().unwrap_or_default(), d.field.clone()))
        .collect();
    assert_eq!(
        errors,
        [
            (
                "Service/default/s3".to_string(),
                Some("spec.ports[0].port".to_string())
            ),
            (
                "Service/default/s1400".to_string(),
                Some("spec.ports[0].port".to_string())
            ),
        ]
    );
    assert_eq!(s.services.len(), 1498);
    assert!(!s.services.contains_key("s3.default.svc.cluster.local"));
    assert!(s.services.contains_key("s4.default.svc.cluster.local"));
}

/// `trafficPolicy.tls` per cluster with Istio's precedence (subset
/// port-level > subset > top-level port-level > top level, each replacing
/// `tls` whole), auto mTLS where nothing sets it, and the transport each
/// mode leads to.
#[test]
fn destination_rule_tls_precedence_and_transport() {
    use strait_config::snapshot::{TlsMode, UpstreamTransport};
    let yaml = format!(
        "{SVC}{}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy:
    tls: {{mode: SIMPLE, sni: api.example.com, caCertificates: /etc/ca.pem, subjectAltNames: [a.example.com]}}
    portLevelSettings:
    - port: {{number: 9090}}
      tls: {{mode: DISABLE}}
  subsets:
  - name: v1
    labels: {{version: v1}}
    trafficPolicy:
      tls: {{mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCrl: /crl.pem}}
      portLevelSettings:
      - port: {{number: 3306}}
        tls: {{mode: ISTIO_MUTUAL}}
  - name: v2
    labels: {{version: v2}}
---
apiVersion: v1
kind: Service
metadata: {{name: plain, namespace: default}}
spec:
  clusterIP: 10.96.0.11
  ports: [{{name: http, port: 80}}]
",
        pod("reviews-v1-a", "10.1.0.1", "v1"),
    );
    let s = snap(&yaml);
    let host = "reviews.default.svc.cluster.local";
    let c = |port: u16, subset: &str| &s.clusters[&format!("outbound|{port}|{subset}|{host}")].tls;
    // Top level.
    let top = c(9080, "");
    assert_eq!(top.mode, TlsMode::Simple);
    assert!(!top.auto_mtls);
    assert_eq!(top.sni.as_deref(), Some("api.example.com"));
    assert_eq!(top.ca_certificates.as_deref(), Some("/etc/ca.pem"));
    assert_eq!(top.subject_alt_names, ["a.example.com"]);
    // Top-level port settings replace the top level for that port.
    assert_eq!(c(9090, "").mode, TlsMode::Disable);
    assert_eq!(c(9090, "").sni, None);
    // A subset without its own policy inherits the top level (and its port
    // settings); one with its own `tls` replaces it whole.
    assert_eq!(c(9080, "v2").mode, TlsMode::Simple);
    assert_eq!(c(9090, "v2").mode, TlsMode::Disable);
    let v1 = c(9080, "v1");
    assert_eq!(v1.mode, TlsMode::Mutual);
    assert_eq!(
        v1.sni, None,
        "the subset's tls does not inherit the top level's sni"
    );
    assert_eq!(v1.client_certificate.as_deref(), Some("/c.pem"));
    assert_eq!(v1.ca_crl.as_deref(), Some("/crl.pem"));
    assert_eq!(c(3306, "v1").mode, TlsMode::IstioMutual);
    // No DestinationRule: auto mTLS.
    let plain = &s.clusters["outbound|80||plain.default.svc.cluster.local"].tls;
    assert!(plain.auto_mtls);
    assert_eq!(plain.mode, TlsMode::Disable);

    // Transport per (meshed destination, daemon has a CA, enableAutoMtls).
    assert_eq!(plain.transport(true, true, true), UpstreamTransport::Hbone);
    assert_eq!(
        plain.transport(false, true, true),
        UpstreamTransport::Plaintext
    );
    assert_eq!(
        plain.transport(true, false, true),
        UpstreamTransport::Plaintext
    );
    assert_eq!(
        plain.transport(true, true, false),
        UpstreamTransport::Plaintext
    );
    assert_eq!(
        c(9090, "").transport(true, true, true),
        UpstreamTransport::Plaintext
    );
    assert_eq!(
        top.transport(true, true, true),
        UpstreamTransport::Originate
    );
    assert_eq!(
        v1.transport(false, false, true),
        UpstreamTransport::Originate
    );
    let im = c(3306, "v1");
    assert_eq!(im.transport(true, true, true), UpstreamTransport::Hbone);
    assert!(
        matches!(im.transport(false, true, true), UpstreamTransport::Refuse(r) if r.contains("outside the mesh"))
    );
    assert!(
        matches!(im.transport(true, false, true), UpstreamTransport::Refuse(r) if r.contains("--ca-dir"))
    );
}
