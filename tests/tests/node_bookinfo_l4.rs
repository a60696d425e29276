//! Bookinfo wired to Service VIPs on a simulated node, with the kernel
//! socket load balancer (strait::datapath) attached to the node's pods
//! cgroup and loaded from the node's config dir: the VIPs work, as they
//! will under `strait run`, with every service forced to L4 mode (no L7
//! proxy in this test).
use std::collections::BTreeMap;
use std::path::PathBuf;

use strait::datapath::{Datapath, DatapathConfig, L4Mode};
use strait_tests::node::bookinfo::{self, Options, Upstream};
use strait_tests::node::{Node, PodSpec};

const APP: &str = env!("CARGO_BIN_EXE_bookinfo-app");

/// Detaches the programs and removes the pins even when the test fails.
struct Guard(Option<Datapath>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(dp) = self.0.take() {
            if let Err(e) = dp.cleanup() {
                eprintln!("warning: data path cleanup: {e:#}");
            }
        }
    }
}

#[test]
fn bookinfo_answers_through_vips_with_the_kernel_load_balancer() {
    let Some(p) = strait_tests::privileged::require(
        "bookinfo_answers_through_vips_with_the_kernel_load_balancer",
    ) else {
        return;
    };
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/bookinfo");
    let mut node = Node::new(&p.cgroup2, "node-a", 32).unwrap();
    let opts = Options {
        timeout_ms: Some(2000),
        ..Options::new(APP, Upstream::Vip)
    };
    let bookinfo = bookinfo::start(&mut node, &samples.join("platform.yaml"), &opts).unwrap();
    node.add_pod(PodSpec::new("client", &[("app", "client")]))
        .unwrap();

    // What the daemon would do: compile the config dir, program the kernel.
    let dir = node.tmp_dir().join("config");
    node.write_config(&dir).unwrap();
    let loaded = strait_config::load::load_paths(&[&dir]);
    let (snap, _) = strait_config::compile(&loaded.resources);
    let mut services = snap.l4.clone();
    assert_eq!(services.len(), 4, "{services:?}");
    for s in &mut services {
        s.mode = L4Mode::L4;
    }
    let mut config = DatapathConfig::new(node.id());
    config.bpffs = node.bpffs_dir();
    let mut dp = Guard(Some(Datapath::new(&config).unwrap()));
    let d = dp.0.as_mut().unwrap();
    d.attach(&node.pods_cgroup()).unwrap();
    d.apply(&services).unwrap();

    // A client process in a pod (so in the pods cgroup) asks productpage's
    // VIP; productpage and reviews reach their upstreams' VIPs the same way.
    let url = format!("http://{}/productpage", bookinfo.productpage_vip().unwrap());
    let client = node.pod("default", "client").unwrap();
    let n = 30;
    let mut versions: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..n {
        let out = client
            .command("curl")
            .unwrap()
            .args(["-sS", "-m", "5", "-H", "end-user: jason", &url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(body["service"], "productpage");
        assert_eq!(body["details"]["service"], "details", "{body}");
        let reviews = &body["reviews"];
        let v = reviews["version"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"));
        if v != "v1" {
            assert_eq!(reviews["ratings"]["service"], "ratings", "{body}");
            assert_eq!(reviews["ratings"]["headers"]["end-user"], "jason");
        }
        *versions.entry(v.to_string()).or_default() += 1;
    }
    // The kernel spreads reviews connections at random over three pods.
    for v in ["v1", "v2", "v3"] {
        let count = versions.get(v).copied().unwrap_or(0);
        strait_tests::lb::assert_binomial(&format!("reviews {v}"), count, n, 1.0 / 3.0);
    }
}
