//! Bookinfo on a simulated node from the project's own platform YAML:
//! end to end over plain routing (upstream URLs at pod IPs, no mesh), and
//! wired to the Services' VIPs for the mesh.
use std::collections::BTreeSet;
use std::path::PathBuf;

use strait_tests::node::bookinfo::{self, get, Options, Upstream};
use strait_tests::node::{Node, PodSpec};

const APP: &str = env!("CARGO_BIN_EXE_bookinfo-app");

fn platform() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/bookinfo/platform.yaml")
}

#[test]
fn productpage_answers_end_to_end_over_plain_routing() {
    let Some(p) =
        strait_tests::privileged::require("productpage_answers_end_to_end_over_plain_routing")
    else {
        return;
    };
    let mut node = Node::new(&p.cgroup2, "node-a", 30).unwrap();
    let mut bookinfo =
        bookinfo::start(&mut node, &platform(), &Options::new(APP, Upstream::Direct)).unwrap();
    let services: BTreeSet<(&str, &str)> = bookinfo
        .apps()
        .iter()
        .map(|a| (a.service.as_str(), a.version.as_str()))
        .collect();
    assert_eq!(
        services,
        BTreeSet::from([
            ("details", "v1"),
            ("productpage", "v1"),
            ("ratings", "v1"),
            ("reviews", "v1"),
            ("reviews", "v2"),
            ("reviews", "v3"),
        ])
    );
    // A client pod outside bookinfo, as the demo's load generator.
    node.add_pod(PodSpec::new("client", &[("app", "client")]))
        .unwrap();
    let client = node.pod("default", "client").unwrap().clone();
    let pp = bookinfo.productpage_direct();
    let ask = |user: &str| {
        client
            .run_in(|| {
                get(
                    pp,
                    "productpage:9080",
                    "/productpage",
                    &[("end-user", user)],
                )
            })
            .unwrap()
            .unwrap()
    };

    // productpage spreads reviews calls round robin over the three pods.
    let mut versions = Vec::new();
    for _ in 0..3 {
        let (status, body) = ask("jason");
        assert_eq!(status, 200);
        assert_eq!(body["service"], "productpage");
        assert_eq!(body["pod"], "productpage-v1-node-a-0");
        assert_eq!(body["details"]["pod"], "details-v1-node-a-0");
        let reviews = &body["reviews"];
        let v = reviews["version"].as_str().unwrap().to_string();
        assert_eq!(reviews["pod"], format!("reviews-{v}-node-a-0"));
        if v == "v1" {
            assert!(reviews.get("ratings").is_none());
        } else {
            assert_eq!(reviews["ratings"]["pod"], "ratings-v1-node-a-0");
            assert_eq!(reviews["ratings"]["headers"]["end-user"], "jason");
        }
        versions.push(v);
    }
    versions.sort();
    assert_eq!(versions, ["v1", "v2", "v3"]);

    // ratings down: reviews v2 and v3 say so, with the reason; v1 is fine.
    assert!(bookinfo.kill("ratings-v1-node-a-0"));
    for _ in 0..3 {
        let (status, body) = ask("jason");
        assert_eq!(status, 200);
        let reviews = &body["reviews"];
        if reviews["version"] != "v1" {
            assert_eq!(
                reviews["ratings"]["error"], "ratings service unavailable",
                "{body}"
            );
        }
    }
}

#[test]
fn upstreams_point_at_the_service_vips() {
    let Some(p) = strait_tests::privileged::require("upstreams_point_at_the_service_vips") else {
        return;
    };
    let mut node = Node::new(&p.cgroup2, "node-a", 31).unwrap();
    // The kernel rate-limits "no route" ICMP errors (5, then 1/s per
    // source), so some connects to a VIP hang until the app's timeout;
    // keep it short.
    let opts = Options {
        timeout_ms: Some(300),
        ..Options::new(APP, Upstream::Vip)
    };
    let bookinfo = bookinfo::start(&mut node, &platform(), &opts).unwrap();
    let vip = bookinfo.productpage_vip().unwrap();
    assert_eq!(
        vip.ip(),
        node.service("default", "productpage")
            .unwrap()
            .cluster_ip
            .unwrap()
    );
    assert_eq!(vip.port(), 9080);

    // Every app got the VIPs of the services it calls.
    let pp = bookinfo
        .apps()
        .iter()
        .find(|a| a.service == "productpage")
        .unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", pp.pid())).unwrap();
    let args: Vec<&str> = cmdline.split('\0').collect();
    for svc in ["details", "reviews"] {
        let ip = node.service("default", svc).unwrap().cluster_ip.unwrap();
        let i = args.iter().position(|a| *a == format!("--{svc}")).unwrap();
        assert_eq!(args[i + 1], format!("http://{ip}:9080"));
    }

    // Without the mesh nothing answers on a VIP: productpage reports both
    // upstreams unavailable (no route to 10.96.0.0/16), and still answers.
    let (status, body) = node
        .run_in(|| {
            get(
                bookinfo.productpage_direct(),
                "productpage:9080",
                "/productpage",
                &[],
            )
        })
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["details"]["error"], "details service unavailable");
    assert_eq!(body["reviews"]["error"], "reviews service unavailable");
}
