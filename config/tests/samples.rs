//! Every Istio sample loads and validates; bookinfo compiles to what Istio's
//! documentation describes.
mod common;

use strait_config::load::load_paths;
use strait_config::snapshot::{AbortStatus, HeaderMatch, Protocol, StringMatch, TlsMode};
use strait_config::{compile, Level};

#[test]
fn every_sample_file_loads_and_validates() {
    let Some(dir) = common::istio_dir("every_sample_file_loads_and_validates") else {
        return;
    };
    let loaded = load_paths(&[dir.join("bookinfo"), dir.join("config-corpus")]);
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.level == Level::Error)
        .map(|d| d.to_string())
        .collect();
    assert!(errors.is_empty(), "load errors:\n{}", errors.join("\n"));
    assert!(
        loaded.resources.len() > 100,
        "only {} resources",
        loaded.resources.len()
    );
    let diags = strait_config::validate::validate(&loaded.resources);
    let invalid: Vec<String> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    assert!(
        invalid.is_empty(),
        "validation errors:\n{}",
        invalid.join("\n")
    );
    // Istio's test corpus points ServiceEntries at 127.0.0.x, which Istio
    // accepts: Strait loads them with a warning, and its node proxy refuses
    // to connect there (a pod could otherwise reach the node's own
    // listeners, issue 14).
    let loopback: Vec<String> = diags
        .iter()
        .filter(|d| !d.is_error())
        .map(|d| d.to_string())
        .filter(|e| e.contains(": may not be in the loopback range"))
        .collect();
    assert!(
        !loopback.is_empty()
            && loopback
                .iter()
                .all(|e| e.contains("ServiceEntry/") && e.contains("spec.endpoints[")),
        "{loopback:#?}"
    );
}

fn bookinfo(files: &[&str]) -> Option<strait_config::MeshSnapshot> {
    let dir = common::istio_dir("bookinfo")?;
    let mut paths = vec![dir.join("bookinfo/platform/bookinfo.yaml")];
    paths.extend(
        files
            .iter()
            .map(|f| dir.join("bookinfo/networking").join(f)),
    );
    let loaded = load_paths(&paths);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let (snap, diags) = compile(&loaded.resources);
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    Some(snap)
}

const REVIEWS: &str = "reviews.default.svc.cluster.local";

#[test]
fn bookinfo_services_and_subsets() {
    let Some(snap) = bookinfo(&["destination-rule-all.yaml"]) else {
        return;
    };
    let hosts: Vec<&str> = snap.services.keys().map(String::as_str).collect();
    assert_eq!(
        hosts,
        [
            "details.default.svc.cluster.local",
            "productpage.default.svc.cluster.local",
            "ratings.default.svc.cluster.local",
            REVIEWS,
        ]
    );
    let reviews = &snap.services[REVIEWS];
    assert_eq!(reviews.ports.len(), 1);
    assert_eq!(reviews.ports[0].port, 9080);
    assert_eq!(reviews.ports[0].protocol, Protocol::Http);
    for v in ["v1", "v2", "v3"] {
        let c = &snap.clusters[&format!("outbound|9080|{v}|{REVIEWS}")];
        assert_eq!(c.subset_labels.get("version").map(String::as_str), Some(v));
    }
    assert!(snap
        .clusters
        .contains_key(&format!("outbound|9080||{REVIEWS}")));
    // No VirtualService: one default route to the service-wide cluster.
    let r = snap.routes_for(REVIEWS, 9080).unwrap();
    assert_eq!(r.http.len(), 1);
    assert_eq!(
        r.http[0].route[0].cluster,
        format!("outbound|9080||{REVIEWS}")
    );
    assert_eq!(r.http[0].route[0].weight, 100);
}

#[test]
fn bookinfo_all_v1_routes_every_service_to_v1() {
    let Some(snap) = bookinfo(&["destination-rule-all.yaml", "virtual-service-all-v1.yaml"]) else {
        return;
    };
    for svc in ["productpage", "reviews", "ratings", "details"] {
        let host = format!("{svc}.default.svc.cluster.local");
        let r = snap.routes_for(&host, 9080).unwrap();
        assert_eq!(r.http.len(), 1, "{host}");
        assert_eq!(r.http[0].route.len(), 1);
        assert_eq!(
            r.http[0].route[0].cluster,
            format!("outbound|9080|v1|{host}")
        );
        assert!(snap.clusters.contains_key(&r.http[0].route[0].cluster));
    }
}

#[test]
fn bookinfo_jason_goes_to_v2() {
    let Some(snap) = bookinfo(&[
        "destination-rule-all.yaml",
        "virtual-service-reviews-test-v2.yaml",
    ]) else {
        return;
    };
    let r = snap.routes_for(REVIEWS, 9080).unwrap();
    assert_eq!(r.http.len(), 2);
    let m = &r.http[0].matches[0];
    assert_eq!(
        m.headers.get("end-user"),
        Some(&HeaderMatch::Exact("jason".into()))
    );
    assert_eq!(r.http[0].route[0].subset, "v2");
    assert!(r.http[1].matches.is_empty());
    assert_eq!(r.http[1].route[0].subset, "v1");
}

#[test]
fn bookinfo_weighted_splits() {
    for (file, want) in [
        (
            "virtual-service-reviews-50-v3.yaml",
            vec![("v1", 50), ("v3", 50)],
        ),
        (
            "virtual-service-reviews-80-20.yaml",
            vec![("v1", 80), ("v2", 20)],
        ),
        (
            "virtual-service-reviews-90-10.yaml",
            vec![("v1", 90), ("v2", 10)],
        ),
    ] {
        let Some(snap) = bookinfo(&["destination-rule-all.yaml", file]) else {
            return;
        };
        let r = snap.routes_for(REVIEWS, 9080).unwrap();
        let got: Vec<(&str, u32)> = r.http[0]
            .route
            .iter()
            .map(|d| (d.subset.as_str(), d.weight))
            .collect();
        assert_eq!(got, want, "{file}");
    }
}

#[test]
fn bookinfo_delay_and_abort_faults() {
    let ratings = "ratings.default.svc.cluster.local";
    let Some(snap) = bookinfo(&[
        "destination-rule-all.yaml",
        "virtual-service-ratings-test-delay.yaml",
    ]) else {
        return;
    };
    let r = snap.routes_for(ratings, 9080).unwrap();
    let d = r.http[0].fault.as_ref().unwrap().delay.as_ref().unwrap();
    assert_eq!(d.fixed_delay_ms, 7000);
    assert_eq!(d.percentage, 100.0);
    assert!(r.http[1].fault.is_none());
    let Some(snap) = bookinfo(&[
        "destination-rule-all.yaml",
        "virtual-service-ratings-test-abort.yaml",
    ]) else {
        return;
    };
    let r = snap.routes_for(ratings, 9080).unwrap();
    let a = r.http[0].fault.as_ref().unwrap().abort.as_ref().unwrap();
    assert_eq!(a.status, AbortStatus::Http(500));
    assert_eq!(a.percentage, 100.0);
}

#[test]
fn bookinfo_mtls_rule_sets_istio_mutual() {
    let Some(snap) = bookinfo(&["destination-rule-all-mtls.yaml"]) else {
        return;
    };
    for v in ["", "v1", "v2", "v3"] {
        let c = &snap.clusters[&format!("outbound|9080|{v}|{REVIEWS}")];
        assert_eq!(c.tls.mode, TlsMode::IstioMutual, "{}", c.name);
    }
}

#[test]
fn bookinfo_gateway_routes_productpage_paths() {
    let Some(snap) = bookinfo(&["bookinfo-gateway.yaml"]) else {
        return;
    };
    let gw = &snap.gateways["default/bookinfo-gateway"];
    assert_eq!(gw.servers[0].port, 8080);
    assert_eq!(gw.servers[0].protocol, Protocol::Http);
    let vhosts = &gw.routes[&8080];
    assert_eq!(vhosts.len(), 1);
    assert_eq!(vhosts[0].domains, ["*"]);
    let route = &vhosts[0].routes.http[0];
    let uris: Vec<&StringMatch> = route
        .matches
        .iter()
        .filter_map(|m| m.uri.as_ref())
        .collect();
    assert_eq!(
        uris,
        [
            &StringMatch::Exact("/productpage".into()),
            &StringMatch::Prefix("/static".into()),
            &StringMatch::Exact("/login".into()),
            &StringMatch::Exact("/logout".into()),
            &StringMatch::Prefix("/api/v1/products".into()),
        ]
    );
    assert_eq!(
        route.route[0].cluster,
        "outbound|9080||productpage.default.svc.cluster.local"
    );
    // A gateway-only VirtualService does not change mesh routing.
    let mesh = snap
        .routes_for("productpage.default.svc.cluster.local", 9080)
        .unwrap();
    assert_eq!(mesh.http[0].name, "default");
}

#[test]
fn static_service_entry_endpoints_keep_weights_and_localities() {
    let Some(dir) = common::istio_dir("static_service_entry") else {
        return;
    };
    let loaded = load_paths(&[dir.join("config-corpus/static-weighted-se.yaml")]);
    let (snap, _) = compile(&loaded.resources);
    let c = &snap.clusters["outbound|80||weighted.static.svc.cluster.local"];
    let got: Vec<(String, u32, &str)> = c
        .endpoints
        .iter()
        .map(|e| (e.addr.to_string(), e.weight, &*e.locality))
        .collect();
    assert_eq!(
        got,
        [
            ("1.1.1.1:80".to_string(), 3, "b"),
            ("2.2.2.2:80".to_string(), 8, "a"),
            ("3.3.3.3:80".to_string(), 1, "a"),
        ]
    );
    assert_eq!(c.protocol, Protocol::Http);
}
