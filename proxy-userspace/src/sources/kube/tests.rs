//! The watch → snapshot path without a cluster: synthetic watcher events
//! of every watched kind go through the store and the compiler, as the
//! daemon runs them.
use serde_json::{json, Value};
use std::sync::mpsc;
use strait_config::enroll::Enrollment;
use strait_config::MeshSnapshot;

use super::store::{Change, ObjectStore};
use super::KINDS;

fn kinds() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.kind).collect()
}

struct Harness {
    store: ObjectStore,
    wakes: mpsc::Receiver<()>,
    synced: tokio::sync::watch::Receiver<bool>,
}

impl Harness {
    fn new() -> Self {
        let (tx, wakes) = mpsc::channel();
        let (store, synced) = ObjectStore::new(&kinds(), tx);
        Self {
            store,
            wakes,
            synced,
        }
    }

    /// Lists every kind with `objects` (each routed to its kind).
    fn initial_list(&mut self, objects: &[Value]) {
        for k in kinds() {
            self.store.handle(k, Change::Init);
            for o in objects.iter().filter(|o| o["kind"] == k) {
                self.store.handle(k, Change::InitApply(o.clone()));
            }
            self.store.handle(k, Change::InitDone);
        }
    }

    fn kind_of(v: &Value) -> &'static str {
        let k = v["kind"].as_str().unwrap();
        kinds()
            .into_iter()
            .find(|x| *x == k)
            .expect("a watched kind")
    }

    fn apply(&mut self, v: Value) {
        self.store.handle(Self::kind_of(&v), Change::Apply(v));
    }

    fn delete(&mut self, v: Value) {
        self.store.handle(Self::kind_of(&v), Change::Delete(v));
    }

    fn woke(&mut self) -> usize {
        let mut n = 0;
        while self.wakes.try_recv().is_ok() {
            n += 1;
        }
        n
    }

    fn compile(&mut self) -> (MeshSnapshot, Enrollment, Vec<String>) {
        let reload = self.store.snapshot();
        let errors = reload
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect();
        let (snap, _) = strait_config::compile(&reload.resources.to_vec());
        (
            snap,
            Enrollment::from_resources(&reload.resources.to_vec()),
            errors,
        )
    }
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn service(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "default", "resourceVersion": "1",
                        "managedFields": [{"manager": "kubectl"}]},
           "spec": {"clusterIP": ip, "selector": {"app": name},
                    "ports": [{"name": "http", "port": 9080, "targetPort": 9080}]}})
}

fn pod(name: &str, app: &str, version: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                        "labels": {"app": app, "version": version}},
           "spec": {"nodeName": "node-a", "serviceAccountName": format!("bookinfo-{app}"),
                    "containers": [{"name": "app"}]},
           "status": {"phase": "Running", "podIP": ip}})
}

fn service_account(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount",
           "metadata": {"name": name, "namespace": "default"}})
}

fn slice(service: &str, ips: &[(&str, &str)]) -> Value {
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|(ip, pod)| {
            json!({"addresses": [ip], "conditions": {"ready": true},
                   "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{service}-abc"), "namespace": "default",
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4", "endpoints": endpoints,
           "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}]})
}

fn istio(kind: &str, group: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": format!("{group}/v1"), "kind": kind,
           "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

fn vs(subset: &str) -> Value {
    istio(
        "VirtualService",
        "networking.istio.io",
        "reviews",
        json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": subset}}]}]}),
    )
}

fn dr() -> Value {
    istio(
        "DestinationRule",
        "networking.istio.io",
        "reviews",
        json!({"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                             {"name": "v2", "labels": {"version": "v2"}}]}),
    )
}

fn bookinfo() -> Vec<Value> {
    vec![
        namespace("default", json!({"istio.io/dataplane-mode": "ambient"})),
        service("reviews", "10.96.0.10"),
        service_account("bookinfo-reviews"),
        pod("reviews-v1", "reviews", "v1", "10.244.0.11"),
        pod("reviews-v2", "reviews", "v2", "10.244.0.12"),
        slice(
            "reviews",
            &[("10.244.0.11", "reviews-v1"), ("10.244.0.12", "reviews-v2")],
        ),
        vs("v1"),
        dr(),
        istio(
            "Gateway",
            "networking.istio.io",
            "gw",
            json!({"selector": {"istio": "ingressgateway"},
                     "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}),
        ),
        istio(
            "ServiceEntry",
            "networking.istio.io",
            "ext",
            json!({"hosts": ["api.example.com"], "ports": [{"number": 443, "name": "https", "protocol": "TLS"}],
                     "resolution": "DNS", "location": "MESH_EXTERNAL"}),
        ),
        istio(
            "Sidecar",
            "networking.istio.io",
            "default",
            json!({"egress": [{"hosts": ["./*", "istio-system/*"]}]}),
        ),
        istio(
            "WorkloadEntry",
            "networking.istio.io",
            "vm",
            json!({"address": "10.1.0.5", "labels": {"app": "vm"}}),
        ),
        istio(
            "PeerAuthentication",
            "security.istio.io",
            "default",
            json!({"mtls": {"mode": "STRICT"}}),
        ),
        istio(
            "RequestAuthentication",
            "security.istio.io",
            "jwt",
            json!({"selector": {"matchLabels": {"app": "reviews"}},
                     "jwtRules": [{"issuer": "testing@secure.istio.io",
                                   "jwksUri": "https://example.com/jwks.json"}]}),
        ),
        istio(
            "AuthorizationPolicy",
            "security.istio.io",
            "deny-all",
            json!({}),
        ),
        mesh_config("outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"),
        tls_secret("reviews-client"),
    ]
}

fn mesh_config(mesh: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "istio", "namespace": "istio-system"},
           "data": {"mesh": mesh}})
}

const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

/// A `kubernetes.io/tls` Secret as the API server serves it (base64 data).
fn tls_secret(name: &str) -> Value {
    use base64::Engine;
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": name, "namespace": "default"},
           "data": {"tls.crt": b(PEM_CERT), "tls.key": b(PEM_KEY)}})
}

fn subset(snap: &MeshSnapshot) -> Option<String> {
    let routes = snap.routes_for("reviews.default.svc.cluster.local", 9080)?;
    let json = serde_json::to_value(routes).ok()?;
    let text = json.to_string();
    ["v1", "v2"]
        .into_iter()
        .find(|s| text.contains(&format!("|9080|{s}|reviews")))
        .map(String::from)
}

#[test]
fn every_watched_kind_is_listed_compiled_and_counted() {
    let mut h = Harness::new();
    assert!(!*h.synced.borrow());
    h.initial_list(&bookinfo());
    assert!(*h.synced.borrow(), "synced after every kind's InitDone");
    let counts = h.store.counts();
    for k in kinds() {
        assert_eq!(counts[k], 1 + usize::from(k == "Pod"), "{k}: {counts:?}");
    }
    let (snap, enrollment, errors) = h.compile();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(snap
        .services
        .contains_key("reviews.default.svc.cluster.local"));
    assert!(snap.services.contains_key("api.example.com"));
    assert_eq!(subset(&snap).as_deref(), Some("v1"));
    assert_eq!(snap.workloads.len(), 3, "two pods and the WorkloadEntry");
    // The `istio` ConfigMap's mesh config and the TLS Secret.
    assert_eq!(
        snap.mesh.outbound_traffic_policy.mode,
        strait_config::mesh::OutboundMode::RegistryOnly
    );
    let cred = snap
        .credential("default", "reviews-client")
        .expect("the Secret");
    assert_eq!(cred.private_key.as_ref().unwrap().0, PEM_KEY.as_bytes());
    assert!(enrollment.pods.iter().all(|p| p.meshed()));
    assert_eq!(
        enrollment
            .pod("default", "reviews-v1")
            .unwrap()
            .uid
            .as_deref(),
        Some("uid-reviews-v1")
    );
}

#[test]
fn not_synced_until_every_kind_is_listed() {
    let mut h = Harness::new();
    for k in kinds().into_iter().skip(1) {
        h.store.handle(k, Change::Init);
        h.store.handle(k, Change::InitDone);
    }
    assert!(!*h.synced.borrow());
    assert_eq!(
        h.store.unsynced().into_iter().collect::<Vec<_>>(),
        vec!["Namespace"]
    );
    // A kind the server does not serve (CRD missing) counts as listed.
    h.store.mark_absent("Namespace");
    assert!(*h.synced.borrow());
}

#[test]
fn adds_updates_and_deletes_of_each_kind_change_the_snapshot() {
    let mut h = Harness::new();
    h.initial_list(&bookinfo());
    h.woke();
    // Update: the VirtualService moves to v2.
    h.apply(vs("v2"));
    assert_eq!(h.woke(), 1);
    assert_eq!(subset(&h.compile().0).as_deref(), Some("v2"));
    // The same object again (a resync) changes nothing and wakes nothing.
    h.apply(vs("v2"));
    assert_eq!(h.woke(), 0);
    // Add: a new Service and its endpoints.
    h.apply(service("ratings", "10.96.0.20"));
    h.apply(pod("ratings-v1", "ratings", "v1", "10.244.0.21"));
    h.apply(slice("ratings", &[("10.244.0.21", "ratings-v1")]));
    let (snap, ..) = h.compile();
    let ratings = snap
        .services
        .get("ratings.default.svc.cluster.local")
        .expect("added");
    assert_eq!(ratings.vip, Some("10.96.0.20".parse().unwrap()));
    assert!(snap.workloads.contains_key(&"10.244.0.21".parse().unwrap()));
    // Delete each kind: every object goes.
    for v in bookinfo() {
        h.delete(v);
    }
    h.delete(service("ratings", "10.96.0.20"));
    h.delete(pod("ratings-v1", "ratings", "v1", "10.244.0.21"));
    h.delete(slice("ratings", &[("10.244.0.21", "ratings-v1")]));
    assert!(
        h.store.counts().values().all(|n| *n == 0),
        "{:?}",
        h.store.counts()
    );
    let (snap, enrollment, _) = h.compile();
    assert!(snap.services.is_empty() && snap.workloads.is_empty());
    assert!(enrollment.pods.is_empty());
}

#[test]
fn a_relist_replaces_the_kind_atomically_and_drops_what_is_gone() {
    let mut h = Harness::new();
    h.initial_list(&bookinfo());
    h.woke();
    // After 410 Gone the watcher relists: Init, the current objects, InitDone.
    h.store.handle("Pod", Change::Init);
    h.store.handle(
        "Pod",
        Change::InitApply(pod("reviews-v2", "reviews", "v2", "10.244.0.12")),
    );
    // Mid-relist, the old set is still what is served (never half a list).
    assert_eq!(h.store.counts()["Pod"], 2);
    assert_eq!(h.woke(), 0);
    h.store.handle("Pod", Change::InitDone);
    assert_eq!(h.woke(), 1);
    assert_eq!(
        h.store.counts()["Pod"],
        1,
        "reviews-v1 was deleted while we were away"
    );
    let (_, enrollment, _) = h.compile();
    assert!(enrollment.pod("default", "reviews-v1").is_none());
    // A reconnect that resumes sees the same objects: nothing changes.
    h.store.handle("Pod", Change::Init);
    h.store.handle(
        "Pod",
        Change::InitApply(pod("reviews-v2", "reviews", "v2", "10.244.0.12")),
    );
    h.store.handle("Pod", Change::InitDone);
    assert_eq!(h.woke(), 0);
}

#[test]
fn an_invalid_object_is_reported_and_keeps_its_last_good_version_next_to_valid_ones() {
    let mut h = Harness::new();
    h.initial_list(&bookinfo());
    // An invalid edit of the VirtualService (subset names are DNS labels).
    h.apply(vs("v1.0"));
    // A new invalid DestinationRule next to a valid one.
    let mut bad = dr();
    bad["metadata"]["name"] = json!("broken");
    bad["spec"]["trafficPolicy"] = json!({"loadBalancer": {"simple": "FASTEST"}});
    h.apply(bad);
    let (snap, _, errors) = h.compile();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("VirtualService/default/reviews")
                && e.contains("subset name is invalid: v1.0")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("DestinationRule/default/broken")),
        "{errors:?}"
    );
    assert_eq!(
        subset(&snap).as_deref(),
        Some("v1"),
        "last good version kept"
    );
    assert!(
        snap.services.contains_key("api.example.com"),
        "the rest still loads"
    );
    assert_eq!(h.store.counts()["DestinationRule"], 1);
    // The errors are reported once.
    assert!(h.compile().2.is_empty());
    // An invalid object in a relist also keeps its last good version.
    h.store.handle("VirtualService", Change::Init);
    h.store
        .handle("VirtualService", Change::InitApply(vs("v1.0")));
    h.store.handle("VirtualService", Change::InitDone);
    assert_eq!(subset(&h.compile().0).as_deref(), Some("v1"));
}

#[test]
fn mesh_config_and_secret_edits_reach_the_snapshot_and_a_bad_one_keeps_the_last_good() {
    let mut h = Harness::new();
    h.initial_list(&bookinfo());
    h.woke();
    // The mesh config edited: back to ALLOW_ANY.
    h.apply(mesh_config("outboundTrafficPolicy: {mode: ALLOW_ANY}\n"));
    assert_eq!(h.woke(), 1);
    let (snap, _, errors) = h.compile();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        snap.mesh.outbound_traffic_policy.mode,
        strait_config::mesh::OutboundMode::AllowAny
    );
    // A broken mesh config: reported, the last good one stays.
    h.apply(mesh_config("outboundTrafficPolicy: {mode: SOMETIMES}\n"));
    let (snap, _, errors) = h.compile();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("ConfigMap/istio-system/istio") && e.contains("MeshConfig")),
        "{errors:?}"
    );
    assert_eq!(
        snap.mesh.outbound_traffic_policy.mode,
        strait_config::mesh::OutboundMode::AllowAny
    );
    // A Secret whose key went missing keeps its last good material; the
    // error names the field, never the content.
    let mut half = tls_secret("reviews-client");
    half["data"].as_object_mut().unwrap().remove("tls.key");
    h.apply(half);
    let (snap, _, errors) = h.compile();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Secret/default/reviews-client") && e.contains("data.tls.crt")),
        "{errors:?}"
    );
    assert!(errors.iter().all(|e| !e.contains("MIIB")), "{errors:?}");
    assert!(snap.credential("default", "reviews-client").is_some());
    // Deleted: gone.
    h.delete(tls_secret("reviews-client"));
    assert!(h
        .compile()
        .0
        .credential("default", "reviews-client")
        .is_none());
}

#[test]
fn enrollment_follows_namespace_and_pod_label_flips() {
    let mut h = Harness::new();
    h.initial_list(&bookinfo());
    let meshed = |h: &mut Harness| {
        let (_, e, _) = h.compile();
        e.pods
            .iter()
            .filter(|p| p.meshed())
            .map(|p| p.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(meshed(&mut h), vec!["reviews-v1", "reviews-v2"]);
    h.apply(namespace("default", json!({})));
    assert!(meshed(&mut h).is_empty());
    h.apply(namespace("default", json!({"istio-injection": "enabled"})));
    assert_eq!(meshed(&mut h).len(), 2);
    let mut out = pod("reviews-v1", "reviews", "v1", "10.244.0.11");
    out["metadata"]["labels"]["istio.io/dataplane-mode"] = json!("none");
    h.apply(out);
    assert_eq!(meshed(&mut h), vec!["reviews-v2"]);
    assert!(h.woke() >= 3);
}

#[test]
fn watch_events_name_the_objects_that_changed_and_endpoint_updates_compile_incrementally() {
    use strait_config::compile::Incremental;
    let mut h = Harness::new();
    let reviews = |ips: &[(&str, &str)]| slice("reviews", ips);
    h.initial_list(&[
        namespace("default", json!({"istio.io/dataplane-mode": "ambient"})),
        service("reviews", "10.96.0.10"),
        pod("reviews-v1", "reviews", "v1", "10.244.0.11"),
        pod("reviews-v2", "reviews", "v2", "10.244.0.12"),
        reviews(&[("10.244.0.11", "reviews-v1")]),
        vs("v1"),
    ]);
    h.woke();
    let first = h.store.snapshot();
    assert!(first.changed.is_none(), "the first snapshot: unknown");
    let (mut inc, mut snap, _) = Incremental::compile(&first.resources.to_vec());
    // An EndpointSlice update: named, applied incrementally, and the same
    // as a full compile.
    h.apply(reviews(&[
        ("10.244.0.11", "reviews-v1"),
        ("10.244.0.12", "reviews-v2"),
    ]));
    let r = h.store.snapshot();
    let c = r.changed.as_ref().expect("named after the first snapshot");
    let keys = |v: &[strait_config::Resource]| v.iter().map(|r| r.key()).collect::<Vec<_>>();
    assert_eq!(keys(&c.removed), ["EndpointSlice/default/reviews-abc"]);
    assert_eq!(keys(&c.added), ["EndpointSlice/default/reviews-abc"]);
    let diff = inc
        .try_apply(&mut snap, r.resources.iter(), &c.removed, &c.added)
        .expect("an endpoint change applies incrementally");
    assert_eq!(diff.clusters.changed.len(), 1, "{diff:?}");
    assert_eq!(snap, strait_config::compile(&r.resources.to_vec()).0);
    // A delete is named as removed; nothing changed since: empty.
    h.delete(vs("v1"));
    let r = h.store.snapshot();
    let c = r.changed.expect("named");
    assert!(c.added.is_empty());
    assert_eq!(keys(&c.removed), ["VirtualService/default/reviews"]);
    let c = h.store.snapshot().changed.expect("named");
    assert!(c.added.is_empty() && c.removed.is_empty());
    // A relist that changes what is served: unknown again.
    h.store.handle("Pod", Change::Init);
    h.store.handle("Pod", Change::InitDone);
    assert!(h.store.snapshot().changed.is_none());
}
