//! HBONE interoperability with Istio's ztunnel (issue 20): a ztunnel pod
//! and pods on a Strait node talk mTLS to each other through HBONE, both
//! trusting ztunnel's test root (`../shared/hbone/ztunnel-test-ca/`, which
//! ztunnel uses with `FAKE_CA=true` and Strait's embedded CA is given as
//! its `--ca-dir`).
//!
//! - ztunnel → Strait: a client in the ztunnel pod connects to a pod on
//!   the Strait node; ztunnel (dedicated mode, outbound capture by an
//!   iptables REDIRECT in its pod) tunnels it to `<pod IP>:15008`, and
//!   Strait's log of the inbound tunnel shows the ztunnel workload's
//!   SPIFFE ID (`src.identity=`).
//! - Strait → ztunnel: a pod on the Strait node connects to the ztunnel
//!   pod; Strait tunnels it to the ztunnel pod's `:15008`, ztunnel's
//!   access log shows the Strait pod's SPIFFE ID as `src.identity`, and
//!   Strait's access log shows ztunnel's as `%UPSTREAM_PEER_URI_SAN%`.
//!
//! Runs only when `ZTUNNEL_BIN` names a ztunnel binary (istio/ztunnel built
//! outside this repository) and says so otherwise. Needs root; the nodes'
//! `Drop` removes every namespace, cgroup and process.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use strait_tests::node::{link, Daemon, Guard, Node, PodSpec};

const ADMIN: &str = "127.0.0.1:15000";
const APP_PORT: u16 = 8080;
const ZT_ID: &str = "spiffe://cluster.local/ns/default/sa/zt-sa";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/strait-client";

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Strait's `--ca-dir` made of ztunnel's test root and key (the root signs
/// the workload certificates directly, as ztunnel's FAKE_CA does).
fn ca_dir(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/hbone/ztunnel-test-ca");
    let ca = dir.join("ca");
    std::fs::create_dir_all(&ca).unwrap();
    let root = std::fs::read_to_string(src.join("root-cert.pem"))
        .expect("../shared/hbone/ztunnel-test-ca/root-cert.pem");
    for f in ["ca-cert.pem", "root-cert.pem", "cert-chain.pem"] {
        std::fs::write(ca.join(f), &root).unwrap();
    }
    std::fs::copy(src.join("ca-key.pem"), ca.join("ca-key.pem")).unwrap();
    ca
}

/// ztunnel's local workload file: every pod of the test, HBONE-capable.
fn local_xds(pods: &[(&str, &str, std::net::Ipv4Addr, &str)]) -> String {
    let mut s = String::from("workloads:\n");
    for (name, sa, ip, node) in pods {
        s.push_str(&format!(
            "- uid: Kubernetes//Pod/default/{name}\n  name: {name}\n  namespace: default\n  serviceAccount: {sa}\n  workloadIps: [\"{ip}\"]\n  protocol: HBONE\n  node: {node}\n  network: \"\"\n  trustDomain: cluster.local\n  services: {{}}\n"
        ));
    }
    s
}

fn wait_for(
    what: &str,
    timeout: Duration,
    logs: &dyn Fn() -> String,
    mut ok: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}\n{}", logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ztunnel_and_strait_exchange_hbone_with_peer_identities() {
    let name = "ztunnel_and_strait_exchange_hbone_with_peer_identities";
    let Some(ztunnel) = strait_tests::privileged::ztunnel_bin(name, "") else {
        return;
    };
    let Some(p) = strait_tests::privileged::require(name) else {
        return;
    };
    let backend = strait_tests::demo::mesh::sibling("bench-backend").unwrap();

    // Node S runs Strait with two pods; node Z holds the ztunnel pod.
    let mut ns = Node::new(&p.cgroup2, "strait-node", 83).unwrap();
    let mut nz = Node::new(&p.cgroup2, "zt-node", 84).unwrap();
    link(&ns, &nz).unwrap();
    let mut client = PodSpec::new("strait-client", &[("app", "strait-client")]);
    client.service_account = "strait-client".into();
    ns.add_pod(client).unwrap();
    let mut server = PodSpec::new("strait-server", &[("app", "strait-server")]);
    server.service_account = "strait-server".into();
    ns.add_pod(server).unwrap();
    let mut zt = PodSpec::new("zt-pod", &[("app", "zt")]);
    zt.service_account = "zt-sa".into();
    nz.add_pod(zt).unwrap();
    let ip = |n: &Node, pod: &str| n.pod("default", pod).unwrap().ip;
    let (client_ip, server_ip, zt_ip) = (
        ip(&ns, "strait-client"),
        ip(&ns, "strait-server"),
        ip(&nz, "zt-pod"),
    );

    // The apps: an HTTP server in the Strait server pod and in the ztunnel pod.
    let app = |n: &Node, pod: &str, ip: std::net::Ipv4Addr| {
        let mut c = n
            .pod("default", pod)
            .unwrap()
            .command(&backend)
            .unwrap()
            .args(["--http", &format!("{ip}:{APP_PORT}")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(c.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Guard::term_on_drop(c)
    };
    let _server_app = app(&ns, "strait-server", server_ip);
    let _zt_app = app(&nz, "zt-pod", zt_ip);

    // Strait: the whole cluster in its config, the peer identities in its
    // access log, the CA on ztunnel's test root.
    let dir = ns.tmp_dir().to_path_buf();
    let config = dir.join("config");
    ns.write_config(&config).unwrap();
    nz.write_config(&config).unwrap();
    std::fs::write(
        config.join("mesh.yaml"),
        "accessLogFormat: \"peer=%DOWNSTREAM_PEER_URI_SAN% upstream_peer=%UPSTREAM_PEER_URI_SAN% cluster=%UPSTREAM_CLUSTER% code=%RESPONSE_CODE%\\n\"\n",
    )
    .unwrap();
    let strait = Daemon::on(&ns, &config)
        .args(["--admin", ADMIN, "--ca-dir"])
        .arg(ca_dir(&dir))
        .sigterm_on_drop()
        .spawn()
        .unwrap();

    // ztunnel in its pod, dedicated mode, FAKE_CA, outbound capture of the
    // app port by iptables in the pod (as the sidecar-style capture does).
    let zdir = nz.tmp_dir().to_path_buf();
    std::fs::write(
        zdir.join("local.yaml"),
        local_xds(&[
            ("zt-pod", "zt-sa", zt_ip, "zt-node"),
            ("strait-client", "strait-client", client_ip, "strait-node"),
            ("strait-server", "strait-server", server_ip, "strait-node"),
        ]),
    )
    .unwrap();
    let zpod = nz.pod("default", "zt-pod").unwrap();
    let out = zpod
        .command("iptables")
        .unwrap()
        .args(["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d"])
        .arg(server_ip.to_string())
        .args([
            "--dport",
            &APP_PORT.to_string(),
            "-j",
            "REDIRECT",
            "--to-ports",
            "15001",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "iptables: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let zt_log = zdir.join("ztunnel.log");
    let f = std::fs::File::create(&zt_log).unwrap();
    let _zt = Guard::term_on_drop(
        zpod.command(&ztunnel)
            .unwrap()
            .env("FAKE_CA", "true")
            .env("XDS_ADDRESS", "")
            .env("LOCAL_XDS_PATH", zdir.join("local.yaml"))
            .env("PROXY_MODE", "dedicated")
            .env("PROXY_WORKLOAD_INFO", "default/zt-pod/zt-sa")
            .env("ENABLE_ORIG_SRC", "false")
            .env("IPV6_ENABLED", "false")
            // `access=debug`: ztunnel logs "connection opened" when a
            // tunnelled connection starts ("connection complete" only when
            // it ends, and Strait keeps its L7 upstream connections open).
            .env("RUST_LOG", "info,access=debug")
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let logs = || {
        format!(
            "--- strait log:\n{}\n--- ztunnel log:\n{}",
            strait.log(),
            read(&zt_log)
        )
    };
    let curl = |cmd: std::process::Command| -> String {
        let mut cmd = cmd;
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_for("Strait ready", Duration::from_secs(60), &logs, || {
        let mut c = ns.command("curl").unwrap();
        c.args(["-sS", "-m", "2", &format!("http://{ADMIN}/ready")]);
        curl(c).contains("LIVE")
    });
    wait_for("ztunnel ready", Duration::from_secs(60), &logs, || {
        let mut c = zpod.command("curl").unwrap();
        c.args([
            "-sS",
            "-m",
            "2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://127.0.0.1:15021/healthz/ready",
        ]);
        curl(c) == "200"
    });

    // ztunnel → Strait.
    wait_for(
        "a request from the ztunnel pod reaches the Strait pod over HBONE, and Strait logs the ztunnel identity",
        Duration::from_secs(60),
        &logs,
        || {
            let mut c = zpod.command("curl").unwrap();
            c.args(["-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{server_ip}:{APP_PORT}/")]);
            // The destination node logs each tunnelled connection with the
            // peer's identity (`strait::hbone` line, `src.identity=`).
            curl(c) == "200"
                && strait.log().lines().any(|l| {
                    l.contains("inbound HBONE connection") && l.contains(&format!("src.identity={ZT_ID}"))
                })
        },
    );

    // Strait → ztunnel.
    wait_for(
        "a request from the Strait pod reaches the ztunnel pod over HBONE, and ztunnel logs the Strait identity",
        Duration::from_secs(60),
        &logs,
        || {
            let mut c = ns.pod("default", "strait-client").unwrap().command("curl").unwrap();
            c.args(["-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{zt_ip}:{APP_PORT}/")]);
            // ztunnel's record of the inbound tunnel names the identity
            // Strait presented (`src.identity="spiffe://.../sa/strait-client"`).
            curl(c) == "200"
                && read(&zt_log).lines().any(|l| {
                    l.contains("access")
                        && l.contains("direction=\"inbound\"")
                        && l.contains(&format!("src.identity=\"{CLIENT_ID}\""))
                        && l.contains(&format!("dst.identity=\"{ZT_ID}\""))
                })
        },
    );
    if let Some(l) = read(&zt_log)
        .lines()
        .find(|l| l.contains(&format!("src.identity=\"{CLIENT_ID}\"")))
    {
        println!("ztunnel: {l}");
    }
    // Strait dials the tunnel from the client pod's IP (ztunnel's in-pod
    // mode), so ztunnel knows the source workload by its address.
    assert!(
        read(&zt_log).lines().any(|l| {
            l.contains(&format!("src.identity=\"{CLIENT_ID}\""))
                && l.contains(&format!("src.addr={client_ip}:"))
                && l.contains("src.workload=\"strait-client\"")
        }),
        "{}",
        logs()
    );
    // Strait's side of that connection names ztunnel's identity upstream
    // (its access-log line is written when the connection closes: wait).
    wait_for(
        "Strait's access log names ztunnel's identity upstream",
        Duration::from_secs(30),
        &logs,
        || strait.log().contains(&format!("upstream_peer={ZT_ID}")),
    );
}
