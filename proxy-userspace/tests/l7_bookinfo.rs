//! Istio's bookinfo traffic-management samples, unchanged from
//! `shared/istio/bookinfo/networking/`, route as Istio's documentation
//! says (`shared/istio/README.md`), through the proxy with real backends
//! standing in for each bookinfo version.
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use strait::runtime::route::RouteAction;
use support::client::Client;
use support::{assert_binomial, Kind, Mesh, MeshBuilder};

/// The samples directory, or `None` (with the reason printed) when it is
/// missing and `STRAIT_NO_SKIP` is unset.
fn samples() -> Option<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/istio/bookinfo/networking");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("STRAIT_NO_SKIP").is_none(),
        "{} is missing",
        dir.display()
    );
    eprintln!("skipping: {} is missing", dir.display());
    None
}

fn sample(dir: &std::path::Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Bookinfo's services (port 9080, `http`) with one backend per version.
async fn bookinfo(dir: &std::path::Path, files: &[&str]) -> Mesh {
    let mut b = MeshBuilder::new();
    b.versioned(Kind::Http, "productpage", 9080, "http", &["v1"])
        .await;
    b.versioned(Kind::Http, "details", 9080, "http", &["v1"])
        .await;
    b.versioned(Kind::Http, "ratings", 9080, "http", &["v1"])
        .await;
    b.versioned(Kind::Http, "reviews", 9080, "http", &["v1", "v2", "v3"])
        .await;
    for f in files {
        b.yaml(&sample(dir, f));
    }
    b.start().await
}

async fn reviews_versions(mesh: &Mesh, n: usize, headers: &[(&str, &str)]) -> [usize; 3] {
    let c = Client::http1();
    let mut counts = [0; 3];
    for _ in 0..n {
        let r = c.get(&mesh.url("reviews", "/reviews/0"), headers).await;
        assert_eq!(r.status, 200);
        match r.served_by() {
            Some("reviews-v1") => counts[0] += 1,
            Some("reviews-v2") => counts[1] += 1,
            Some("reviews-v3") => counts[2] += 1,
            other => panic!("unexpected backend {other:?}"),
        }
    }
    counts
}

/// The routing of `destination-rule-all-mtls.yaml` over HBONE is checked
/// with a CA in `strait-tests`' `node_bookinfo_mtls`; without one (this
/// in-process proxy has no workload certificates) ISTIO_MUTUAL is refused,
/// never sent in plain text: 503 `UF`, as Envoy's failed handshake.
#[tokio::test]
async fn all_v1_with_plain_destination_rules_and_mtls_refused_without_a_ca() {
    let Some(dir) = samples() else { return };
    let mesh = bookinfo(
        &dir,
        &[
            "destination-rule-all-mtls.yaml",
            "virtual-service-all-v1.yaml",
        ],
    )
    .await;
    let r = Client::http1()
        .get(&mesh.url("reviews", "/reviews/0"), &[])
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    let logs = mesh.logs().await;
    let rec = logs
        .iter()
        .find(|l| {
            l.upstream_cluster.as_deref()
                == Some("outbound|9080|v1|reviews.default.svc.cluster.local")
        })
        .expect("a record for reviews v1");
    assert!(
        rec.response_flags.to_string().starts_with("UF"),
        "{}",
        rec.response_flags
    );
    assert_eq!(
        rec.upstream_transport_failure_reason.as_deref(),
        Some(strait_config::snapshot::REFUSE_NO_IDENTITY)
    );
    {
        let dr = "destination-rule-all.yaml";
        let mesh = bookinfo(&dir, &[dr, "virtual-service-all-v1.yaml"]).await;
        assert_eq!(reviews_versions(&mesh, 30, &[]).await, [30, 0, 0], "{dr}");
        let c = Client::http1();
        for (svc, pod) in [
            ("productpage", "productpage-v1"),
            ("details", "details-v1"),
            ("ratings", "ratings-v1"),
        ] {
            assert_eq!(
                c.get(&mesh.url(svc, "/"), &[]).await.served_by(),
                Some(pod),
                "{dr}"
            );
        }
        let logs = mesh.logs().await;
        assert!(logs.iter().any(|l| l.upstream_cluster.as_deref()
            == Some("outbound|9080|v1|reviews.default.svc.cluster.local")));
    }
}

#[tokio::test]
async fn jason_goes_to_reviews_v2() {
    let Some(dir) = samples() else { return };
    let mesh = bookinfo(
        &dir,
        &[
            "destination-rule-all.yaml",
            "virtual-service-reviews-test-v2.yaml",
        ],
    )
    .await;
    assert_eq!(
        reviews_versions(&mesh, 10, &[("end-user", "jason")]).await,
        [0, 10, 0]
    );
    assert_eq!(
        reviews_versions(&mesh, 10, &[("end-user", "kim")]).await,
        [10, 0, 0]
    );
    assert_eq!(reviews_versions(&mesh, 10, &[]).await, [10, 0, 0]);
}

#[tokio::test]
async fn weighted_reviews_samples_split_as_configured() {
    let Some(dir) = samples() else { return };
    let n = 300;
    for (file, v1, v2, v3) in [
        ("virtual-service-reviews-50-v3.yaml", 0.5, 0.0, 0.5),
        ("virtual-service-reviews-80-20.yaml", 0.8, 0.2, 0.0),
        ("virtual-service-reviews-90-10.yaml", 0.9, 0.1, 0.0),
    ] {
        let mesh = bookinfo(&dir, &["destination-rule-all.yaml", file]).await;
        let got = reviews_versions(&mesh, n, &[]).await;
        for (i, p) in [v1, v2, v3].into_iter().enumerate() {
            if p == 0.0 {
                assert_eq!(got[i], 0, "{file}: v{} has no weight", i + 1);
            } else {
                assert_binomial(got[i], n, p, &format!("{file}: v{}", i + 1));
            }
        }
    }
}

#[tokio::test]
async fn ratings_delay_for_jason() {
    let Some(dir) = samples() else { return };
    // The sample itself: compiled to a 7 s delay on every request of jason.
    let mesh = bookinfo(
        &dir,
        &[
            "destination-rule-all.yaml",
            "virtual-service-ratings-test-delay.yaml",
        ],
    )
    .await;
    let table = mesh.proxy.table();
    let ratings = table
        .routes
        .services
        .values()
        .find(|s| s.host.starts_with("ratings."))
        .unwrap();
    let jason = &ratings.routes.http[0];
    let fault = jason.fault.as_ref().expect("jason's rule has a fault");
    assert_eq!(fault.delay, Some((100.0, Duration::from_secs(7))));
    assert!(matches!(jason.action, RouteAction::Forward(_)));
    assert!(ratings.routes.http[1].fault.is_none());
    drop(mesh);

    // The same sample with the delay shortened, to time real requests.
    let mut b = MeshBuilder::new();
    b.versioned(Kind::Http, "ratings", 9080, "http", &["v1"])
        .await;
    b.yaml(&sample(&dir, "destination-rule-all.yaml"));
    b.yaml(
        &sample(&dir, "virtual-service-ratings-test-delay.yaml")
            .replace("fixedDelay: 7s", "fixedDelay: 300ms"),
    );
    let mesh = b.start().await;
    let c = Client::http1();
    let t = Instant::now();
    let r = c
        .get(&mesh.url("ratings", "/ratings/0"), &[("end-user", "jason")])
        .await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(
        c.get(&mesh.url("ratings", "/ratings/0"), &[]).await.status,
        200
    );
    assert!(t.elapsed() < Duration::from_millis(250));
}

#[tokio::test]
async fn ratings_abort_for_jason() {
    let Some(dir) = samples() else { return };
    let mesh = bookinfo(
        &dir,
        &[
            "destination-rule-all.yaml",
            "virtual-service-ratings-test-abort.yaml",
        ],
    )
    .await;
    let c = Client::http1();
    let r = c
        .get(&mesh.url("ratings", "/ratings/0"), &[("end-user", "jason")])
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (500, "fault filter abort")
    );
    let r = c.get(&mesh.url("ratings", "/ratings/0"), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.served_by()),
        (200, Some("ratings-v1"))
    );
}
