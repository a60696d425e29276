//! Mutual TLS between workloads across two simulated nodes (HBONE, as
//! ztunnel speaks it): node A runs `strait run --ca-dir` (the embedded CA,
//! also serving node B), node B runs `strait run --ca-address` against it.
//! A client pod on A reaches a server pod on B through a Service and
//! directly by pod IP; the server sees the connection delivered from
//! `127.0.0.6` inside its namespace (the daemon's in-pod delivery), and a
//! capture on the link between the nodes holds none of the payload.
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use strait_tests::node::capture::{self, Capture};
use strait_tests::node::{link, Node, PodSpec, ServiceDef, ServicePort};

const PROBE: &str = env!("CARGO_BIN_EXE_strait-probe");
const ECHO_PORT: u16 = 7300;

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn start(node: &Node, config: &Path, args: &[&str], admin: &str) -> Daemon {
    let strait = strait_tests::demo::mesh::sibling("strait").unwrap();
    let log = node.tmp_dir().join("strait.log");
    let f = std::fs::File::create(&log).unwrap();
    let child = node
        .strait_run(&strait, config)
        .unwrap()
        .args(["--admin", admin, "--drain-ms", "200"])
        .args(args)
        .env("RUST_LOG", "info,strait::transport=debug")
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Daemon { child, log }
}

fn wait_file(path: &Path, d: &mut Daemon) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!("the daemon exited ({st}); log:\n{}", d.log());
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared; log:\n{}",
            path.display(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first line the server sent to a probe from `pod`'s client to `addr`.
fn probe(node: &Node, pod: &str, addr: SocketAddr) -> String {
    let out = node
        .pod("default", pod)
        .unwrap()
        .command(PROBE)
        .unwrap()
        .args(["tcp", &addr.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A server in the pod: sends `<canary> peer=<ip>` to every client.
fn serve_canary(node: &Node, pod: &str, canary: &'static str) -> SocketAddr {
    let p = node.pod("default", pod).unwrap();
    let addr = SocketAddr::from((p.ip, ECHO_PORT));
    let l = p.run_in(|| TcpListener::bind(addr)).unwrap().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let peer = s.peer_addr().map(|p| p.ip().to_string()).unwrap_or_default();
            let _ = writeln!(s, "{canary} peer={peer}");
            // Drain what the client sends, then close.
            let mut line = String::new();
            let _ = BufReader::new(&s).read_line(&mut line);
        }
    });
    addr
}

#[test]
fn tcp_between_pods_on_two_nodes_goes_through_hbone_and_the_link_carries_no_plaintext() {
    let name = "tcp_between_pods_on_two_nodes_goes_through_hbone_and_the_link_carries_no_plaintext";
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let mut a = Node::new(&p.cgroup2, "node-a", 46).unwrap();
    let mut b = Node::new(&p.cgroup2, "node-b", 47).unwrap();
    let mut client = PodSpec::new("client", &[("app", "client")]);
    client.service_account = "sleep".into();
    a.add_pod(client).unwrap();
    let mut server = PodSpec::new("server", &[("app", "echo")]);
    server.service_account = "echo".into();
    b.add_pod(server).unwrap();
    let svc = ServiceDef {
        name: "echo".into(),
        namespace: "default".into(),
        selector: [("app".to_string(), "echo".to_string())].into(),
        ports: vec![ServicePort {
            name: Some("tcp-echo".into()),
            port: ECHO_PORT,
            target_port: None,
            protocol: "TCP".into(),
            app_protocol: None,
        }],
        cluster_ip: None,
        headless: false,
    };
    let vip = a.add_service(svc.clone()).unwrap().cluster_ip.unwrap();
    b.add_service(svc).unwrap();
    link(&a, &b).unwrap();
    // One config directory for both nodes (each writes its own pods).
    let config = a.tmp_dir().join("config");
    a.write_config(&config).unwrap();
    b.write_config(&config).unwrap();

    let canary: &'static str = "PLAINTEXT-CANARY-7f3e9a";
    let server_addr = serve_canary(&b, "server", canary);

    // Node A: the embedded CA, serving node B too.
    let ca_dir = a.tmp_dir().join("ca");
    let tokens = a.tmp_dir().join("tokens");
    std::fs::write(&tokens, "node-b-token-0123456789 node-b\n").unwrap();
    let token_b = b.tmp_dir().join("token");
    std::fs::write(&token_b, "node-b-token-0123456789\n").unwrap();
    let ca_listen = format!("{}:15012", a.gateway());
    let mut da = start(
        &a,
        &config,
        &[
            "--ca-dir",
            ca_dir.to_str().unwrap(),
            "--ca-listen",
            &ca_listen,
            "--ca-tokens",
            tokens.to_str().unwrap(),
        ],
        "127.0.0.1:15000",
    );
    let root = ca_dir.join("root-cert.pem");
    wait_file(&root, &mut da);
    let db = start(
        &b,
        &config,
        &[
            "--ca-address",
            &format!("https://{ca_listen}"),
            "--ca-root",
            root.to_str().unwrap(),
            "--ca-token-file",
            token_b.to_str().unwrap(),
        ],
        "127.0.0.1:15000",
    );

    let svc_addr = SocketAddr::from((vip, ECHO_PORT));
    let want = format!("{canary} peer=127.0.0.6");
    // Until both nodes have their certificates and B its listener.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = probe(&a, "client", svc_addr);
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "through the Service: {got:?}\nnode A:\n{}\nnode B:\n{}",
            da.log(),
            db.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    let iface = format!("l{}", b.id());
    let cap = Capture::start(a.netns(), &iface).unwrap();
    // Through the Service (kernel L4 service compiled to REDIRECT) and
    // straight to the pod IP: both tunnelled, both delivered from 127.0.0.6.
    for _ in 0..3 {
        assert_eq!(probe(&a, "client", svc_addr), want);
    }
    assert_eq!(probe(&a, "client", server_addr), want);
    std::thread::sleep(Duration::from_millis(200));
    let frames = cap.stop();
    assert!(
        !capture::contains(&frames, canary.as_bytes()),
        "the payload crossed the link in plaintext"
    );
    // The capture saw the tunnel: TCP to port 15008 (0x3aa0) and TLS
    // application-data records (0x17 0x03 0x03).
    assert!(
        capture::contains(&frames, &[0x3a, 0xa0]),
        "{} frames, none to 15008",
        frames.len()
    );
    assert!(capture::contains(&frames, &[0x17, 0x03, 0x03]));

    // Node B logged the client's SPIFFE ID for the tunnelled connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !db
        .log()
        .contains("src.identity=spiffe://cluster.local/ns/default/sa/sleep")
    {
        assert!(Instant::now() < deadline, "node B:\n{}", db.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(db);
    drop(da);
}
