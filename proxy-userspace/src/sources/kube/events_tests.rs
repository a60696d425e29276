//! An invalid object read by the real watcher from a fake API server is
//! reported as a Kubernetes Event against it, once (rate-limited).
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::fake_server::{list, FakeApi, Handler, Recorded};
use super::store::{Change, ObjectStore};
use super::{events, watch_kind, Kind, WatchOptions};

fn vs(subset: &str) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": "reviews", "namespace": "default", "uid": "uid-vs",
                        "resourceVersion": "7"},
           "spec": {"hosts": ["reviews"],
                    "http": [{"route": [{"destination": {"host": "reviews", "subset": subset}}]}]}})
}

fn handler() -> Handler {
    Arc::new(|r: &Recorded| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/apis/networking.istio.io/v1/virtualservices") if !r.is_watch() => Some((
            200,
            list("VirtualService", "networking.istio.io/v1", vec![vs("v1.0")]),
        )),
        ("POST", "/apis/events.k8s.io/v1/namespaces/default/events") => Some((201, r.body.clone())),
        _ => None,
    })
}

fn posted(api: &FakeApi) -> Vec<Value> {
    api.recorded()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .map(|r| r.body)
        .collect()
}

#[tokio::test]
async fn an_invalid_object_is_reported_as_an_event_against_it_once() {
    let api = FakeApi::start(handler()).await;
    let (sink, reporter) = events::start(api.client(), "node-a");
    let (wake, _wakes) = mpsc::channel();
    let (store, _synced) = ObjectStore::new(&["VirtualService"], wake);
    let store = Arc::new(Mutex::new(store.with_events(sink)));
    let kind = Kind::new(
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
    );
    let watcher = tokio::spawn(watch_kind(
        api.client(),
        kind,
        store.clone(),
        WatchOptions::default(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while posted(&api).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = posted(&api);
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = &events[0];
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["reason"], events::REASON);
    assert_eq!(ev["reportingController"], "strait");
    assert_eq!(ev["reportingInstance"], "node-a");
    assert_eq!(
        ev["regarding"],
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
               "namespace": "default", "name": "reviews", "uid": "uid-vs",
               "resourceVersion": "7"})
    );
    let note = ev["note"].as_str().unwrap();
    assert!(
        note.contains("subset name is invalid: v1.0") && note.ends_with("; not loaded"),
        "{note}"
    );
    // The same invalid object again (a resync, a relist): no new Event.
    for _ in 0..3 {
        store
            .lock()
            .unwrap()
            .handle("VirtualService", Change::Apply(vs("v1.0")));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(posted(&api).len(), 1, "rate-limited");
    watcher.abort();
    reporter.abort();
}
