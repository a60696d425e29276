//! The project's bookinfo samples (tests/samples/bookinfo) are valid Istio
//! and compile, with the config crate, into the routes each demo step
//! promises in the samples' README.
use std::path::PathBuf;

use strait_config::snapshot::route::{AbortStatus, HeaderMatch, Routes};
use strait_config::{compile, Level, MeshSnapshot};

const STEPS: [&str; 5] = [
    "all-v1.yaml",
    "reviews-jason-v2.yaml",
    "reviews-50-v1-v3.yaml",
    "ratings-delay-jason.yaml",
    "ratings-abort-jason.yaml",
];

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("samples/bookinfo")
        .join(name)
}

/// platform + destination rules + one step, as the demo's config dir.
fn step(name: &str) -> MeshSnapshot {
    let loaded = strait_config::load::load_paths(&[
        sample("platform.yaml"),
        sample("destination-rules.yaml"),
        sample(name),
    ]);
    assert!(!loaded.has_errors(), "{name}: {:?}", loaded.diagnostics);
    let problems: Vec<_> = strait_config::analyze::analyze(&loaded.resources)
        .into_iter()
        .filter(|d| d.level != Level::Info)
        .collect();
    assert!(problems.is_empty(), "{name}: {problems:?}");
    let (snap, diags) = compile(&loaded.resources);
    assert!(
        diags.iter().all(|d| d.level == Level::Info),
        "{name}: {diags:?}"
    );
    snap
}

fn routes<'a>(snap: &'a MeshSnapshot, service: &str) -> &'a Routes {
    snap.routes_for(&format!("{service}.default.svc.cluster.local"), 9080)
        .unwrap_or_else(|| panic!("no routes for {service}"))
}

/// `(subset, weight)` of each destination of route `i`.
fn split(r: &Routes, i: usize) -> Vec<(&str, u32)> {
    r.http[i]
        .route
        .iter()
        .map(|d| (d.subset.as_str(), d.weight))
        .collect()
}

fn matches_jason(r: &Routes, i: usize) -> bool {
    r.http[i].matches.len() == 1
        && r.http[i].matches[0].headers.get("end-user") == Some(&HeaderMatch::Exact("jason".into()))
}

#[test]
fn every_step_routes_productpage_and_details_to_v1() {
    for name in STEPS {
        let snap = step(name);
        for svc in ["productpage", "details"] {
            let r = routes(&snap, svc);
            assert_eq!(r.http.len(), 1, "{name} {svc}");
            assert_eq!(split(r, 0), [("v1", 100)], "{name} {svc}");
        }
    }
}

#[test]
fn all_v1_sends_everyone_to_reviews_v1() {
    let snap = step("all-v1.yaml");
    let r = routes(&snap, "reviews");
    assert_eq!(r.http.len(), 1);
    assert!(r.http[0].matches.is_empty());
    assert_eq!(split(r, 0), [("v1", 100)]);
    assert_eq!(split(routes(&snap, "ratings"), 0), [("v1", 100)]);
}

#[test]
fn jason_goes_to_reviews_v2_in_steps_two_four_and_five() {
    for name in [
        "reviews-jason-v2.yaml",
        "ratings-delay-jason.yaml",
        "ratings-abort-jason.yaml",
    ] {
        let snap = step(name);
        let r = routes(&snap, "reviews");
        assert_eq!(r.http.len(), 2, "{name}");
        assert!(matches_jason(r, 0), "{name}");
        assert_eq!(split(r, 0), [("v2", 100)], "{name}");
        assert!(r.http[1].matches.is_empty(), "{name}: others fall through");
        assert_eq!(split(r, 1), [("v1", 100)], "{name}");
    }
}

#[test]
fn the_split_is_fifty_fifty_between_v1_and_v3() {
    let snap = step("reviews-50-v1-v3.yaml");
    assert_eq!(split(routes(&snap, "reviews"), 0), [("v1", 50), ("v3", 50)]);
}

#[test]
fn faults_apply_to_jason_only() {
    let delay = step("ratings-delay-jason.yaml");
    let r = routes(&delay, "ratings");
    assert!(matches_jason(r, 0));
    let fault = r.http[0].fault.as_ref().unwrap();
    let d = fault.delay.as_ref().unwrap();
    assert_eq!((d.fixed_delay_ms, d.percentage), (2000, 100.0));
    assert!(fault.abort.is_none());
    assert!(r.http[1].fault.is_none() && r.http[1].matches.is_empty());

    let abort = step("ratings-abort-jason.yaml");
    let r = routes(&abort, "ratings");
    assert!(matches_jason(r, 0));
    let a = r.http[0].fault.as_ref().unwrap().abort.as_ref().unwrap();
    assert_eq!(a.percentage, 100.0);
    assert_eq!(a.status, AbortStatus::Http(500));
    assert!(r.http[1].fault.is_none());
}

#[test]
fn platform_services_are_http_on_9080_with_version_subsets() {
    let snap = step("all-v1.yaml");
    for svc in ["productpage", "details", "reviews", "ratings"] {
        let s = &snap.services[&format!("{svc}.default.svc.cluster.local")];
        assert_eq!(s.ports.len(), 1);
        assert_eq!(s.ports[0].port, 9080);
        assert!(
            s.ports[0].protocol.is_http(),
            "{svc}: {:?}",
            s.ports[0].protocol
        );
    }
    for v in ["v1", "v2", "v3"] {
        let c = &snap.clusters[&format!("outbound|9080|{v}|reviews.default.svc.cluster.local")];
        assert_eq!(c.subset_labels["version"], v);
    }
}
