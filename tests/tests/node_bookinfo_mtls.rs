//! Istio's bookinfo with `destination-rule-all-mtls.yaml` (ISTIO_MUTUAL on
//! every service) under `strait run --ca-dir`: routing still behaves as
//! Istio documents, and every hop between the apps now goes through HBONE
//! (same-node traffic is tunnelled too): the daemon's destination side logs
//! each tunnelled connection with the calling app's SPIFFE ID.

use strait_tests::demo::{self, assert_checks, Check, Expect};

fn v(user: Option<&'static str>, n: usize, version: &'static str) -> Check {
    Check::version(user, n, version)
}

#[test]
fn bookinfo_with_istio_mutual_routes_as_documented_over_hbone() {
    let name = "bookinfo_with_istio_mutual_routes_as_documented_over_hbone";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let Some(istio) = demo::istio_samples(name) else {
        return;
    };
    let mesh =
        demo::start_istio_bookinfo(&p, &istio, "destination-rule-all-mtls.yaml", 214).unwrap();
    let jason = Some("jason");
    let routing = |extra: &[&str]| demo::route_istio(&mesh, &istio, extra);
    routing(&[]);
    assert_checks(&mesh, "all-v1", &[v(None, 10, "v1"), v(jason, 10, "v1")]);
    routing(&["virtual-service-reviews-test-v2.yaml"]);
    assert_checks(
        &mesh,
        "reviews-test-v2",
        &[v(jason, 10, "v2"), v(None, 10, "v1")],
    );
    routing(&["virtual-service-reviews-v2-v3.yaml"]);
    assert_checks(
        &mesh,
        "reviews-v2-v3",
        &[Check {
            user: None,
            n: 40,
            expect: Expect::Split(&[("v2", 0.5), ("v3", 0.5)]),
        }],
    );

    // productpage → reviews and reviews → ratings went through the tunnel,
    // presented with the callers' identities.
    let log = mesh.log();
    let tunnelled = |from_sa: &str, to_pod: &str| {
        log.lines().any(|l| {
            l.contains("inbound HBONE connection opened")
                && l.contains(&format!("pod=default/{to_pod}"))
                && l.contains(&format!(
                    "src.identity=spiffe://cluster.local/ns/default/sa/{from_sa}"
                ))
        })
    };
    let hbone_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("HBONE") || l.contains("ERROR"))
        .take(20)
        .collect();
    assert!(
        tunnelled("bookinfo-productpage", "reviews-v2"),
        "{hbone_lines:#?}\n{}",
        mesh.log_tail(60)
    );
    assert!(
        tunnelled("bookinfo-reviews", "ratings-v1"),
        "{hbone_lines:#?}"
    );
}
