//! Tier 3: Istio's own bookinfo files (`../shared/istio/bookinfo/`) on a
//! simulated node under `strait run`, with the outcomes Istio's
//! documentation describes (`../shared/istio/README.md`).
use std::time::Duration;

use strait_tests::demo::{self, assert_checks, Check, Expect};

fn v(user: Option<&'static str>, n: usize, version: &'static str) -> Check {
    Check::version(user, n, version)
}

#[test]
fn istio_bookinfo_routing_samples_route_as_istio_documents() {
    let name = "istio_bookinfo_routing_samples_route_as_istio_documents";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let Some(istio) = demo::istio_samples(name) else {
        return;
    };
    let mesh = demo::start_istio_bookinfo(&p, &istio, "destination-rule-all.yaml", 210).unwrap();
    let jason = Some("jason");
    let routing = |extra: &[&str]| demo::route_istio(&mesh, &istio, extra);

    routing(&[]);
    assert_checks(&mesh, "all-v1", &[v(None, 10, "v1"), v(jason, 10, "v1")]);

    routing(&["virtual-service-reviews-test-v2.yaml"]);
    assert_checks(
        &mesh,
        "reviews-test-v2",
        &[v(jason, 15, "v2"), v(None, 15, "v1")],
    );

    routing(&[
        "virtual-service-reviews-test-v2.yaml",
        "virtual-service-ratings-test-abort.yaml",
    ]);
    assert_checks(
        &mesh,
        "ratings-test-abort",
        &[
            Check {
                user: jason,
                n: 10,
                expect: Expect::RatingsError {
                    version: "v2",
                    status: 500,
                },
            },
            v(None, 10, "v1"),
        ],
    );

    for (file, split) in [
        (
            "virtual-service-reviews-50-v3.yaml",
            &[("v1", 0.5), ("v3", 0.5)][..],
        ),
        (
            "virtual-service-reviews-80-20.yaml",
            &[("v1", 0.8), ("v2", 0.2)][..],
        ),
        (
            "virtual-service-reviews-90-10.yaml",
            &[("v1", 0.9), ("v2", 0.1)][..],
        ),
        (
            "virtual-service-reviews-v2-v3.yaml",
            &[("v2", 0.5), ("v3", 0.5)][..],
        ),
    ] {
        routing(&[file]);
        let split: &'static [(&'static str, f64)] = Box::leak(split.to_vec().into_boxed_slice());
        assert_checks(
            &mesh,
            file,
            &[Check {
                user: None,
                n: 100,
                expect: Expect::Split(split),
            }],
        );
    }

    routing(&["virtual-service-reviews-v3.yaml"]);
    assert_checks(&mesh, "reviews-v3", &[v(None, 10, "v3")]);

    routing(&["virtual-service-reviews-jason-v2-v3.yaml"]);
    assert_checks(
        &mesh,
        "reviews-jason-v2-v3",
        &[v(jason, 10, "v2"), v(None, 10, "v3")],
    );

    // The 7 s ratings delay for jason: productpage gives reviews 3 s and one
    // retry, so jason's page shows reviews unavailable after about 6 s, as
    // Istio's fault-injection task describes; others are unaffected.
    routing(&[
        "virtual-service-reviews-test-v2.yaml",
        "virtual-service-ratings-test-delay.yaml",
    ]);
    let page = mesh
        .productpage(1, &[("end-user", "jason")])
        .unwrap()
        .remove(0);
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.body["reviews"]["error"], "reviews service unavailable",
        "{}",
        page.body
    );
    assert!(
        page.latency >= Duration::from_secs(5),
        "jason's page took only {:?}",
        page.latency
    );
    assert_checks(&mesh, "ratings-test-delay (others)", &[v(None, 5, "v1")]);

    // What the admin API says about all of this.
    let metrics = mesh.admin_text("/stats/prometheus").unwrap();
    let reviews_ok = metrics.lines().find(|l| {
        l.starts_with("istio_requests_total{")
            && l.contains("destination_service=\"reviews.default.svc.cluster.local\"")
            && l.contains("response_code=\"200\"")
            && l.contains("destination_version=\"v3\"")
            && l.contains("source_app=\"productpage\"")
    });
    assert!(
        reviews_ok.is_some(),
        "no istio_requests_total for productpage → reviews v3:\n{metrics}"
    );
    assert!(metrics.contains("istio_request_duration_milliseconds_bucket{"));
    let dump = mesh.admin("/config_dump").unwrap().1;
    assert!(dump["clusters"]["outbound|9080|v2|reviews.default.svc.cluster.local"].is_object());
    let clusters = mesh.admin_text("/clusters").unwrap();
    assert!(
        clusters.lines().any(|l| l
            .starts_with("outbound|9080|v3|reviews.default.svc.cluster.local::")
            && l.ends_with("::health_flags::healthy")),
        "{clusters}"
    );
}
