//! A node built from Kubernetes YAML: Deployments become pods with their
//! template's labels and service account, Services get stable ClusterIPs,
//! and the node writes the Kubernetes view the daemon's config dir needs.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde_yaml::Value;
use strait_tests::node::{Node, Platform};

fn platform() -> Platform {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/bookinfo/platform.yaml");
    Platform::from_file(&path).unwrap()
}

fn docs(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn kinds(docs: &[Value], kind: &str) -> Vec<Value> {
    docs.iter().filter(|d| d["kind"] == kind).cloned().collect()
}

#[test]
fn deployments_become_labelled_pods_and_services_get_vips() {
    let Some(p) =
        strait_tests::privileged::require("deployments_become_labelled_pods_and_services_get_vips")
    else {
        return;
    };
    let platform = platform();
    let mut node = Node::new(&p.cgroup2, "node-a", 40).unwrap();
    let created = node.apply(&platform).unwrap();
    assert_eq!(
        created,
        [
            "details-v1-node-a-0",
            "ratings-v1-node-a-0",
            "reviews-v1-node-a-0",
            "reviews-v2-node-a-0",
            "reviews-v3-node-a-0",
            "productpage-v1-node-a-0",
        ]
    );
    let reviews_v2 = node.pod("default", "reviews-v2-node-a-0").unwrap();
    assert_eq!(
        reviews_v2.spec.labels,
        BTreeMap::from([
            ("app".into(), "reviews".into()),
            ("version".into(), "v2".into())
        ])
    );
    assert_eq!(reviews_v2.spec.service_account, "bookinfo-reviews");
    assert!(reviews_v2.cgroup.starts_with(node.pods_cgroup()) && reviews_v2.cgroup.is_dir());

    let endpoints: Vec<&str> = node
        .endpoints("default", "reviews")
        .iter()
        .map(|p| p.name())
        .collect();
    assert_eq!(
        endpoints,
        [
            "reviews-v1-node-a-0",
            "reviews-v2-node-a-0",
            "reviews-v3-node-a-0"
        ]
    );

    let vips: Vec<_> = node
        .services()
        .iter()
        .map(|s| s.cluster_ip.unwrap())
        .collect();
    assert_eq!(vips.len(), 4);
    for (i, v) in vips.iter().enumerate() {
        assert_eq!(v.octets()[..2], [10, 96], "{v} is in the service CIDR");
        assert!(!vips[..i].contains(v), "{v} allocated twice");
    }
    // Another node of the cluster allocates the same VIPs.
    let mut other = Node::new(&p.cgroup2, "node-b", 41).unwrap();
    other.apply(&platform).unwrap();
    let other_vips: Vec<_> = other
        .services()
        .iter()
        .map(|s| s.cluster_ip.unwrap())
        .collect();
    assert_eq!(vips, other_vips);
}

#[test]
fn the_config_dir_gets_services_pods_and_endpoint_slices() {
    let Some(p) =
        strait_tests::privileged::require("the_config_dir_gets_services_pods_and_endpoint_slices")
    else {
        return;
    };
    let mut node = Node::new(&p.cgroup2, "node-a", 42).unwrap();
    node.apply(&platform()).unwrap();
    let dir = node.tmp_dir().join("config");
    node.write_config(&dir).unwrap();

    // Services carry the allocated ClusterIP and read back as they were.
    let back = Platform::from_file(&dir.join("k8s-services.yaml")).unwrap();
    assert_eq!(back.services, node.services());
    assert!(back
        .service_accounts
        .contains(&("default".into(), "bookinfo-productpage".into())));
    let services = docs(&dir.join("k8s-services.yaml"));
    let reviews = kinds(&services, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "reviews")
        .unwrap();
    let vip = node
        .service("default", "reviews")
        .unwrap()
        .cluster_ip
        .unwrap();
    assert_eq!(reviews["spec"]["clusterIP"], vip.to_string());
    assert_eq!(reviews["spec"]["ports"][0]["name"], "http");
    assert_eq!(
        kinds(&services, "Namespace")[0]["metadata"]["name"],
        "default"
    );

    // Pods: labels, service account, node and pod IP.
    let pods = kinds(&docs(&dir.join("k8s-pods-node-a.yaml")), "Pod");
    assert_eq!(pods.len(), 6);
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let live = node.pod("default", name).unwrap();
        assert_eq!(pod["status"]["podIP"], live.ip.to_string());
        assert_eq!(pod["status"]["phase"], "Running");
        assert_eq!(pod["spec"]["nodeName"], "node-a");
        assert_eq!(
            pod["spec"]["serviceAccountName"],
            live.spec.service_account.as_str()
        );
        assert_eq!(
            pod["metadata"]["labels"]["version"],
            live.spec.labels["version"].as_str()
        );
    }

    // EndpointSlices: one per Service, this node's selected pods.
    let slices = kinds(
        &docs(&dir.join("k8s-endpointslices-node-a.yaml")),
        "EndpointSlice",
    );
    assert_eq!(slices.len(), 4);
    let reviews = slices
        .iter()
        .find(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == "reviews")
        .unwrap();
    let mut addrs: Vec<String> = reviews["endpoints"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["addresses"][0].as_str().unwrap().to_string())
        .collect();
    addrs.sort();
    let mut expected: Vec<String> = node
        .endpoints("default", "reviews")
        .iter()
        .map(|p| p.ip.to_string())
        .collect();
    expected.sort();
    assert_eq!(addrs, expected);
    assert_eq!(reviews["ports"][0]["port"], 9080);
    assert_eq!(reviews["addressType"], "IPv4");
    // No temporary files are left for a watcher to trip on.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".yaml")), "{names:?}");
}

#[test]
fn duplicate_pods_and_services_are_rejected() {
    let Some(p) = strait_tests::privileged::require("duplicate_pods_and_services_are_rejected")
    else {
        return;
    };
    let mut node = Node::new(&p.cgroup2, "node-a", 43).unwrap();
    let platform = platform();
    node.apply(&platform).unwrap();
    let e = format!("{:#}", node.apply(&platform).unwrap_err());
    assert!(e.contains("Service/default/details already exists"), "{e}");
    let mut svc = platform.services[0].clone();
    svc.name = "details-copy".into();
    svc.cluster_ip = node.service("default", "details").unwrap().cluster_ip;
    let e = format!("{:#}", node.add_service(svc).unwrap_err());
    assert!(
        e.contains("spec.clusterIP") && e.contains("already allocated"),
        "{e}"
    );
}

#[test]
fn the_config_crate_sees_the_nodes_vips_and_endpoints() {
    let Some(p) =
        strait_tests::privileged::require("the_config_crate_sees_the_nodes_vips_and_endpoints")
    else {
        return;
    };
    let mut node = Node::new(&p.cgroup2, "node-a", 44).unwrap();
    node.apply(&platform()).unwrap();
    // The demo's config dir: the node's view, the subsets and one step.
    let dir = node.tmp_dir().join("config");
    node.write_config(&dir).unwrap();
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/bookinfo");
    for f in ["destination-rules.yaml", "all-v1.yaml"] {
        std::fs::copy(samples.join(f), dir.join(f)).unwrap();
    }
    let loaded = strait_config::load::load_paths(&[&dir]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let (snap, diags) = strait_config::compile(&loaded.resources);
    assert!(
        diags.iter().all(|d| d.level == strait_config::Level::Info),
        "{diags:?}"
    );

    for svc in node.services() {
        let s = &snap.services[&format!("{}.default.svc.cluster.local", svc.name)];
        assert_eq!(s.vip, svc.cluster_ip.map(Into::into), "{}", svc.name);
    }
    // Each reviews subset's cluster holds exactly that version's pod.
    for v in ["v1", "v2", "v3"] {
        let c = &snap.clusters[&format!("outbound|9080|{v}|reviews.default.svc.cluster.local")];
        let pod = node
            .pod("default", &format!("reviews-{v}-node-a-0"))
            .unwrap();
        let addrs: Vec<_> = c.endpoints.iter().map(|e| e.addr).collect();
        assert_eq!(addrs, [SocketAddr::from((pod.ip, 9080))], "subset {v}");
        assert_eq!(
            c.endpoints[0].service_account.as_deref(),
            Some("bookinfo-reviews")
        );
    }
    // Every pod is a meshed workload with its identity and node.
    for pod in node.pods() {
        let w = &snap.workloads[&std::net::IpAddr::from(pod.ip)];
        assert_eq!(w.name, pod.name());
        assert_eq!(*w.labels, pod.spec.labels);
        assert_eq!(w.service_account, pod.spec.service_account);
        assert_eq!(w.node.as_deref(), Some("node-a"));
    }
}
