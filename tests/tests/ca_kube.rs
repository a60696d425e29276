//! `strait ca serve --kubeconfig` against a fake API server on loopback:
//! the CA becomes ready once the Pods are listed, reviews each caller's
//! service-account token (TokenReview, audience `istio-ca`), issues a node
//! the identities of pods on its own pod's node, refuses others, and
//! refuses a token the API server does not authenticate. No root needed.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strait::identity::client::{CaClient, CaClientConfig, NodeToken};
use strait::identity::SpiffeId;
use strait_tests::fake_apiserver::FakeApiServer;
use strait_tests::node::Guard;

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pod(ns: &str, name: &str, uid: &str, sa: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "uid": uid},
           "spec": {"serviceAccountName": sa, "nodeName": node, "containers": [{"name": "c"}]}})
}

fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn strait_ca_serve_in_kubernetes_mode_issues_by_service_account_token_and_node() {
    let api = FakeApiServer::new();
    api.apply(pod(
        "strait-system",
        "strait-a",
        "uid-a",
        "strait",
        "node-a",
    ));
    api.apply(pod(
        "default",
        "reviews-v1",
        "uid-r",
        "bookinfo-reviews",
        "node-a",
    ));
    api.apply(pod(
        "default",
        "productpage-v1",
        "uid-p",
        "bookinfo-productpage",
        "node-b",
    ));
    api.set_token_review(
        "token-of-strait-a",
        json!({"authenticated": true, "audiences": ["istio-ca"],
               "user": {"username": "system:serviceaccount:strait-system:strait",
                        "extra": {"authentication.kubernetes.io/pod-name": ["strait-a"],
                                  "authentication.kubernetes.io/pod-uid": ["uid-a"]}}}),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api_listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let api_port = api_listener.local_addr().unwrap().port();
    rt.spawn(api.clone().serve(api_listener));

    let dir = TempDir(std::env::temp_dir().join(format!("strait-ca-kube-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let kubeconfig = dir.0.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: 'http://127.0.0.1:{api_port}'}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: nobody}}\ncurrent-context: fake\nusers:\n- name: nobody\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let ca_dir = dir.0.join("ca");
    let (listen, monitoring) = (free_port(), free_port());
    let log = dir.0.join("ca.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(strait_tests::demo::mesh::sibling("strait").unwrap())
        .args(["ca", "serve", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--ca-dir")
        .arg(&ca_dir)
        .args([
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--monitoring",
            &format!("127.0.0.1:{monitoring}"),
        ])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let _ca = Guard::kill_on_drop(child);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    // Ready once the Pods are listed.
    let monitoring_addr = SocketAddr::from(([127, 0, 0, 1], monitoring));
    let deadline = Instant::now() + Duration::from_secs(60);
    let ok = |r: &String| r.lines().next().is_some_and(|l| l.contains(" 200 "));
    while !get(monitoring_addr, "/ready").is_some_and(|r| ok(&r)) {
        assert!(Instant::now() < deadline, "CA not ready:\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let dump = get(monitoring_addr, "/config_dump").unwrap();
    let body: Value = serde_json::from_str(dump.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["pods_per_node"]["node-a"], 2, "{dump}");

    let root_pem = std::fs::read_to_string(ca_dir.join("root-cert.pem")).unwrap();
    let client = |token: &str| {
        CaClient::new(CaClientConfig {
            address: format!("https://127.0.0.1:{listen}"),
            root_pem: root_pem.clone(),
            token: NodeToken::Static(token.into()),
            cluster_id: "Kubernetes".into(),
            ttl: Duration::from_secs(3600),
        })
        .unwrap()
    };
    rt.block_on(async {
        let reviews = SpiffeId::new("cluster.local", "default", "bookinfo-reviews");
        let productpage = SpiffeId::new("cluster.local", "default", "bookinfo-productpage");
        let a = client("token-of-strait-a");
        let cert = a
            .fetch(&reviews)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
        assert_eq!(cert.id, reviews);
        let e = a.fetch(&productpage).await.unwrap_err().to_string();
        assert!(
            e.contains("Unauthenticated") && e.contains("node node-a may not obtain"),
            "{e}"
        );
        let e = client("stolen-or-expired-token")
            .fetch(&reviews)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("token not known"), "{e}");
    });
    // The token never reaches the log.
    assert!(!logs().contains("token-of-strait-a"), "{}", logs());
}
