//! Interoperability with Istio's own CA client: a ztunnel configured with
//! `CA_ADDRESS` pointing at `strait ca serve` (`CA_ROOT_CA`, `AUTH_TOKEN`)
//! obtains its workload certificate.
//!
//! ztunnel is not packaged: this runs only when `ZTUNNEL_BIN` names a
//! ztunnel binary (istio/ztunnel built with `--features testing`; e.g.
//! `cargo build --bin ztunnel --no-default-features --features tls-ring,testing`
//! in a checkout outside this repository) and says so otherwise. ztunnel
//! runs in dedicated mode in a simulated node's network namespace, reading
//! its workload from a local file; in that mode it sends no
//! `ImpersonatedIdentity`, so its token is a workload token
//! (`TOKEN spiffe://...` in the tokens file), as a service-account token is
//! to istiod.
use std::process::Stdio;
use std::time::{Duration, Instant};

use strait_tests::node::{Guard, Node};

fn curl(node: &Node, url: &str) -> String {
    let out = node
        .command("curl")
        .unwrap()
        .args(["-sS", "-m", "5", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ztunnel_obtains_its_certificate_from_strait_ca() {
    let name = "ztunnel_obtains_its_certificate_from_strait_ca";
    let Some(ztunnel) = strait_tests::privileged::ztunnel_bin(name, " with `--features testing`")
    else {
        return;
    };
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let node = Node::new(&p.cgroup2, "zt-node", 78).unwrap();
    let dir = node.tmp_dir().to_path_buf();
    let strait = strait_tests::demo::mesh::sibling("strait").unwrap();
    let id = "spiffe://cluster.local/ns/default/sa/zt-sa";
    let token = "ztunnel-workload-token-0123456789";
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(
        dir.join("config/pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: zt-pod, namespace: default}\nspec:\n  serviceAccountName: zt-sa\n  nodeName: zt-node\n  containers: [{name: app, image: app}]\nstatus: {phase: Running, podIP: 127.0.0.1}\n",
    )
    .unwrap();
    std::fs::write(dir.join("tokens"), format!("{token} {id}\n")).unwrap();
    std::fs::write(dir.join("ztunnel-token"), token).unwrap();
    std::fs::write(
        dir.join("local.yaml"),
        "workloads:\n- uid: Kubernetes//Pod/default/zt-pod\n  name: zt-pod\n  namespace: default\n  serviceAccount: zt-sa\n  workloadIps: [\"127.0.0.1\"]\n  protocol: HBONE\n  node: zt-node\n  network: \"\"\n  trustDomain: cluster.local\n  services: {}\n",
    )
    .unwrap();
    let ca_log = dir.join("ca.log");
    let log = std::fs::File::create(&ca_log).unwrap();
    let _ca = Guard::term_on_drop(
        node.command(&strait)
            .unwrap()
            .args(["ca", "serve", "--ca-dir"])
            .arg(dir.join("ca"))
            .arg("--tokens")
            .arg(dir.join("tokens"))
            .arg("--config")
            .arg(dir.join("config"))
            .args([
                "--listen",
                "127.0.0.1:15012",
                "--monitoring",
                "127.0.0.1:15014",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !curl(&node, "http://127.0.0.1:15014/ready").contains("LIVE") {
        assert!(
            Instant::now() < deadline,
            "CA not up:\n{}",
            std::fs::read_to_string(&ca_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let zt_log = dir.join("ztunnel.log");
    let log = std::fs::File::create(&zt_log).unwrap();
    let _zt = Guard::term_on_drop(
        node.command(&ztunnel)
            .unwrap()
            .env("CA_ADDRESS", "https://127.0.0.1:15012")
            .env("CA_ROOT_CA", dir.join("ca/root-cert.pem"))
            .env("AUTH_TOKEN", dir.join("ztunnel-token"))
            .env("XDS_ADDRESS", "")
            .env("LOCAL_XDS_PATH", dir.join("local.yaml"))
            .env("PROXY_MODE", "dedicated")
            .env("PROXY_WORKLOAD_INFO", "default/zt-pod/zt-sa")
            .env("ENABLE_ORIG_SRC", "false")
            .env("IPV6_ENABLED", "false")
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let logs = || {
        format!(
            "--- CA log:\n{}\n--- ztunnel log:\n{}",
            std::fs::read_to_string(&ca_log).unwrap_or_default(),
            std::fs::read_to_string(&zt_log).unwrap_or_default()
        )
    };
    // A TLS handshake on ztunnel's HBONE port makes it fetch its
    // certificate if it has not already.
    let deadline = Instant::now() + Duration::from_secs(120);
    let dump = loop {
        let _ = node
            .command("openssl")
            .unwrap()
            .args([
                "s_client",
                "-connect",
                "127.0.0.1:15008",
                "-alpn",
                "h2",
                "-brief",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .output();
        let dump: serde_json::Value =
            serde_json::from_str(&curl(&node, "http://127.0.0.1:15000/config_dump"))
                .unwrap_or_default();
        let available = dump["certificates"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["identity"] == id && c["state"] == "Available");
        if available {
            break dump;
        }
        assert!(
            Instant::now() < deadline,
            "ztunnel has no certificate for {id}:\n{dump}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let cert = dump["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["identity"] == id)
        .unwrap();
    // ztunnel's dump gives serial numbers in decimal (its PEMs base64ed).
    let root = std::fs::read_to_string(dir.join("ca/root-cert.pem")).unwrap();
    let root = strait::identity::certs::parse_pem_certs(&root).unwrap();
    let root = strait::identity::CertInfo::from_der(&root[0]).unwrap();
    let root_serial = u128::from_str_radix(&root.serial.replace(':', ""), 16).unwrap();
    let roots: Vec<&str> = cert["rootCerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["serialNumber"].as_str())
        .collect();
    assert_eq!(
        roots,
        [root_serial.to_string()],
        "ztunnel's trust is Strait's root:\n{cert}"
    );
    assert_eq!(
        cert["certChain"].as_array().map(Vec::len),
        Some(1),
        "{cert}"
    );
    let metrics = curl(&node, "http://127.0.0.1:15014/metrics");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("citadel_server_success_cert_issuance_count ") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    println!(
        "ztunnel holds {id} from Strait's CA: serial {}",
        cert["certChain"][0]["serialNumber"]
    );
}
