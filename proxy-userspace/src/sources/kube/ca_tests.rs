//! The CA under Kubernetes against a fake API server: callers present
//! service-account tokens, the CA reviews them (TokenReview, audience
//! `istio-ca`) and allows a node account only identities of pods on its
//! own pod's node; other accounts get their own identity only.
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::ca_auth;
use super::fake_server::{list, FakeApi, Handler, Recorded};
use crate::identity::ca::{Authority, CaService, CaSettings, NodePods, TokenSource};
use crate::identity::proto::{string_struct, IstioCertificateRequest, IMPERSONATED_IDENTITY};
use crate::identity::SpiffeId;
use crate::telemetry::identity::CaMetrics;

fn pod(ns: &str, name: &str, uid: &str, sa: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "uid": uid, "resourceVersion": "1"},
           "spec": {"serviceAccountName": sa, "nodeName": node, "containers": [{"name": "c"}]}})
}

fn pods() -> Vec<Value> {
    vec![
        pod("strait-system", "strait-a", "uid-a", "strait", "node-a"),
        pod("strait-system", "strait-b", "uid-b", "strait", "node-b"),
        pod(
            "default",
            "reviews-v1",
            "uid-r",
            "bookinfo-reviews",
            "node-a",
        ),
        pod(
            "default",
            "productpage-v1",
            "uid-p",
            "bookinfo-productpage",
            "node-b",
        ),
    ]
}

/// The TokenReview answer for each test token.
fn review(token: &str) -> Value {
    let user = |sa: &str, pod: Option<(&str, &str)>| {
        let mut extra = serde_json::Map::new();
        if let Some((name, uid)) = pod {
            extra.insert(
                "authentication.kubernetes.io/pod-name".into(),
                json!([name]),
            );
            extra.insert("authentication.kubernetes.io/pod-uid".into(), json!([uid]));
        }
        json!({"authenticated": true, "audiences": ["istio-ca"],
               "user": {"username": format!("system:serviceaccount:{sa}"), "extra": extra}})
    };
    let status = match token {
        "tok-node-a" => user("strait-system:strait", Some(("strait-a", "uid-a"))),
        "tok-node-b" => user("strait-system:strait", Some(("strait-b", "uid-b"))),
        "tok-stale" => user("strait-system:strait", Some(("strait-a", "uid-old"))),
        "tok-unbound" => user("strait-system:strait", None),
        "tok-productpage" => user(
            "default:bookinfo-productpage",
            Some(("productpage-v1", "uid-p")),
        ),
        _ => json!({"authenticated": false, "error": "token has expired"}),
    };
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
           "spec": {}, "status": status})
}

fn handler() -> Handler {
    Arc::new(|r: &Recorded| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/api/v1/pods") if !r.is_watch() => Some((200, list("Pod", "v1", pods()))),
        ("POST", "/apis/authentication.k8s.io/v1/tokenreviews") => {
            let token = r.body["spec"]["token"].as_str().unwrap_or_default();
            Some((201, review(token)))
        }
        _ => None,
    })
}

fn csr(id: &SpiffeId) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(id.to_string().try_into().unwrap())];
    params.serialize_request(&key).unwrap().pem().unwrap()
}

async fn ask(
    ca: &CaService,
    token: &str,
    id: &SpiffeId,
    impersonate: bool,
) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr: csr(id),
        validity_duration: 3600,
        metadata: impersonate.then(|| string_struct([(IMPERSONATED_IDENTITY, id.to_string())])),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    ca.create_certificate(req).await.map(|_| ())
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa)
}

#[tokio::test]
async fn the_ca_reviews_service_account_tokens_and_allows_a_node_only_its_pods_identities() {
    let api = FakeApi::start(handler()).await;
    let (auth, index, task) = ca_auth::start(
        api.client(),
        vec!["istio-ca".into()],
        vec![("strait-system".into(), "strait".into())],
        "cluster.local",
    );
    tokio::time::timeout(Duration::from_secs(20), index.wait_synced())
        .await
        .expect("the pods are listed");
    assert!(index.ready());
    assert_eq!(index.pods_per_node()["node-a"], 2);
    let metrics = CaMetrics::default();
    let ca = CaService::new(
        Authority::generate("cluster.local").unwrap(),
        CaSettings::default(),
        TokenSource::Review(auth),
        index.clone(),
        metrics.clone(),
    );
    let reviews = id("default", "bookinfo-reviews");
    let productpage = id("default", "bookinfo-productpage");

    // Node A's token (its pod strait-a runs on node-a): reviews is on node-a.
    ask(&ca, "tok-node-a", &reviews, true).await.unwrap();
    // productpage runs on node-b only: refused for node A, issued for node B.
    let e = ask(&ca, "tok-node-a", &productpage, true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(
        e.message().contains("node node-a may not obtain")
            && e.message().contains("bookinfo-productpage"),
        "{}",
        e.message()
    );
    ask(&ca, "tok-node-b", &productpage, true).await.unwrap();
    // A workload's own token: its own identity, with or without asking.
    ask(&ca, "tok-productpage", &productpage, false)
        .await
        .unwrap();
    ask(&ca, "tok-productpage", &productpage, true)
        .await
        .unwrap();
    let e = ask(&ca, "tok-productpage", &reviews, true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(
        e.message().contains(
            "workload spiffe://cluster.local/ns/default/sa/bookinfo-productpage may not obtain"
        ),
        "{}",
        e.message()
    );
    // A node token whose pod was re-created (UID differs), one not bound to
    // a pod, and one the API server does not authenticate.
    for (token, why) in [
        ("tok-stale", "its UID is uid-a and the token's uid-old"),
        ("tok-unbound", "not bound to a pod"),
        ("tok-expired", "token has expired"),
    ] {
        let e = ask(&ca, token, &reviews, true).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{token}");
        assert!(e.message().contains(why), "{token}: {}", e.message());
    }
    // Every review asked for Istio's CA audience, and sent the token only
    // in the TokenReview body.
    let reviews_sent: Vec<Recorded> = api
        .recorded()
        .into_iter()
        .filter(|r| r.path.ends_with("/tokenreviews"))
        .collect();
    assert_eq!(reviews_sent.len(), 9);
    assert!(reviews_sent
        .iter()
        .all(|r| r.body["spec"]["audiences"] == json!(["istio-ca"])));
    assert_eq!(metrics.success.get(), 4);
    assert_eq!(metrics.authn_failure.get(), 5);

    // A pod moving away (deleted) takes the identity with it.
    index.handle(kube::runtime::watcher::Event::Delete(
        serde_json::from_value(pod(
            "default",
            "reviews-v1",
            "uid-r",
            "bookinfo-reviews",
            "node-a",
        ))
        .unwrap(),
    ));
    assert!(ask(&ca, "tok-node-a", &reviews, true).await.is_err());
    task.abort();
}

#[tokio::test]
async fn an_unreachable_api_server_fails_closed_with_unavailable() {
    // Nothing listens on this port once the listener is dropped.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();
    let (auth, index, task) = ca_auth::start(
        client,
        vec!["istio-ca".into()],
        vec![("strait-system".into(), "strait".into())],
        "cluster.local",
    );
    assert!(!index.ready(), "not ready before the pods are listed");
    let ca = CaService::new(
        Authority::generate("cluster.local").unwrap(),
        CaSettings::default(),
        TokenSource::Review(auth),
        index,
        CaMetrics::default(),
    );
    let e = ask(&ca, "tok-node-a", &id("default", "bookinfo-reviews"), true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{}", e.message());
    task.abort();
}
