//! `strait run --sockmap` (issue 20): the same-node hops of a connection
//! through HBONE — client pod → node A's proxy, node B's proxy → server pod —
//! moved socket to socket by the `sk_msg` redirect instead of the TCP
//! stack. An 8 MiB upload read slowly by the server, the client's
//! half-close, and a 4 MiB reply arrive intact (a byte pattern checked at
//! both ends) whether the redirect is on or off (with it on, the backed-up
//! hops move to TCP: the redirect's receive-buffer bound); so does a 1 MiB
//! exchange read as fast as it comes, for which, with the redirect on, the
//! TCP counters of the pods' sockets (`TCP_INFO` bytes acked/received) show
//! the payload bypassed TCP on both hops, and with it off they show it did
//! not (so the check can fail).
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use strait_tests::node::echo::{self, Then};
use strait_tests::node::{link, Daemon, MeshCa, Node, PodSpec, ServiceDef, ServicePort};

const CANARY_PORT: u16 = 7400;
const BULK_PORT: u16 = 7401;
const UPLOAD: u64 = 8 << 20;
const REPLY: u64 = 4 << 20;
const FAST: u64 = 1 << 20;

/// What the two ends printed.
struct Outcome {
    client: Vec<String>,
    server: Vec<String>,
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// Two linked nodes running `strait run` (with `--sockmap` when asked),
/// a client pod on A and a server pod on B behind Service `bulk`; one
/// pattern transfer from the client to the service's VIP.
fn transfer(index: u8, sockmap: bool) -> Option<[Outcome; 2]> {
    let name = format!("node_sockmap_{index}");
    let p = strait_tests::privileged::require(&name)?;
    let mut a = Node::new(&p.cgroup2, "sm-a", index).unwrap();
    let mut b = Node::new(&p.cgroup2, "sm-b", index + 1).unwrap();
    a.add_pod(PodSpec::new("client", &[("app", "client")]))
        .unwrap();
    b.add_pod(PodSpec::new("server", &[("app", "bulk")]))
        .unwrap();
    let svc = ServiceDef::app(
        "bulk",
        "bulk",
        vec![
            ServicePort::named("tcp-canary", CANARY_PORT),
            ServicePort::named("tcp-bulk", BULK_PORT),
        ],
    );
    let vip = a.add_service(svc.clone()).unwrap().cluster_ip.unwrap();
    b.add_service(svc).unwrap();
    link(&a, &b).unwrap();
    let config = a.tmp_dir().join("config");
    a.write_config(&config).unwrap();
    b.write_config(&config).unwrap();
    let server = b.pod("default", "server").unwrap().clone();
    let client = a.pod("default", "client").unwrap().clone();
    echo::tcp(
        echo::listen(&server.netns, (server.ip, CANARY_PORT)).unwrap(),
        |_| "up".to_string(),
        Then::Close,
    );

    let ca = MeshCa::new(&a, &[&b]).unwrap();
    let start = |node: &Node, args: Vec<std::ffi::OsString>| -> Daemon {
        let mut d = Daemon::on(node, &config).quick("info");
        if sockmap {
            d = d.args(["--sockmap"]);
        }
        d.args(args).sigterm_on_drop().spawn().unwrap()
    };
    let mut da = start(&a, ca.server_args());
    da.wait_file(&ca.root());
    let db = start(&b, ca.client_args(&b).unwrap());
    // The tunnel works (certificates, listeners) before the transfer.
    let canary = SocketAddr::from((vip, CANARY_PORT));
    let got = client.probe_until(canary, Duration::from_secs(90), |l| l == "up");
    assert_eq!(got, "up", "node A:\n{}\nnode B:\n{}", da.log(), db.log());
    if sockmap {
        for (d, node) in [(&da, "A"), (&db, "B")] {
            assert!(
                d.log().contains("sockmap: same-node hops"),
                "node {node} did not turn the redirect on:\n{}",
                d.log()
            );
        }
    }

    let run = |kind: Kind| {
        let o = xfer(&client, &server, vip, kind, &da, &db);
        eprintln!(
            "{name}: sockmap={sockmap} {kind:?}: client {:?} server {:?}",
            o.client, o.server
        );
        o
    };
    let slow = run(Kind::Slow);
    let fast = run(Kind::Fast);
    Some([slow, fast])
}

/// The two transfers: an 8 MiB upload read slowly by the server then a
/// 4 MiB reply ([`Kind::Slow`]: the hops back up, so the redirect's bound
/// moves them to TCP), and a 1 MiB upload and reply both read as fast as
/// they come ([`Kind::Fast`]).
#[derive(Clone, Copy, Debug)]
enum Kind {
    Slow,
    Fast,
}

impl Kind {
    fn sizes(self) -> (u64, u64) {
        match self {
            Kind::Slow => (UPLOAD, REPLY),
            Kind::Fast => (FAST, FAST),
        }
    }
}

/// One pattern transfer from `client` to the `bulk` service's VIP.
fn xfer(
    client: &strait_tests::node::Pod,
    server: &strait_tests::node::Pod,
    vip: std::net::Ipv4Addr,
    kind: Kind,
    da: &Daemon,
    db: &Daemon,
) -> Outcome {
    let (upload, reply) = kind.sizes();
    let xfer = strait_tests::demo::mesh::sibling("pattern-xfer").unwrap();
    let bulk_at = SocketAddr::from((server.ip, BULK_PORT));
    let mut args = vec!["sink".to_string(), bulk_at.to_string(), reply.to_string()];
    if let Kind::Slow = kind {
        args.push("--slow".into());
    }
    let mut sink = server
        .command(&xfer)
        .unwrap()
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(sink.stdout.take().unwrap());
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    let started = Instant::now();
    let client_out = client
        .command("timeout")
        .unwrap()
        .arg("120")
        .arg(&xfer)
        .args([
            "send",
            &SocketAddr::from((vip, BULK_PORT)).to_string(),
            &upload.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut server_line = String::new();
    out.read_line(&mut server_line).unwrap();
    let _ = sink.wait();
    let client_line = String::from_utf8_lossy(&client_out.stdout).to_string();
    assert!(
        client_out.status.success(),
        "client: {client_line} {}\nserver: {server_line}\nnode A:\n{}\nnode B:\n{}",
        String::from_utf8_lossy(&client_out.stderr),
        da.log(),
        db.log()
    );
    eprintln!("{kind:?} transfer in {:?}", started.elapsed());
    Outcome {
        client: words(&client_line),
        server: words(&server_line),
    }
}

fn num(w: &[String], key: &str) -> u64 {
    let i = w
        .iter()
        .position(|x| x == key)
        .unwrap_or_else(|| panic!("{key} in {w:?}"));
    w[i + 1].parse().unwrap()
}

/// Both directions arrived whole and in order, the half-close included
/// (the server replies only after reading the client's end of stream).
fn assert_intact(o: &Outcome, kind: Kind) {
    let (upload, reply) = kind.sizes();
    assert_eq!(
        o.client[..3],
        ["received".to_string(), reply.to_string(), "ok".into()],
        "{kind:?}: client {:?}",
        o.client
    );
    assert_eq!(
        o.server[..3],
        ["received".to_string(), upload.to_string(), "ok".into()],
        "{kind:?}: server {:?}",
        o.server
    );
}

#[test]
fn with_sockmap_both_same_node_hops_bypass_tcp_and_a_slow_half_closed_transfer_is_intact() {
    let Some([slow, fast]) = transfer(87, true) else {
        return;
    };
    // The slow one backs up both hops: bounded by moving to TCP, intact.
    assert_intact(&slow, Kind::Slow);
    assert_intact(&fast, Kind::Fast);
    // Hop on node A: the client's bytes went to the proxy's socket, and
    // the proxy's reply to the client's, without TCP.
    assert!(
        num(&fast.client, "tcp_acked") < FAST / 8,
        "client {:?}",
        fast.client
    );
    assert!(
        num(&fast.client, "tcp_received") < FAST / 8,
        "client {:?}",
        fast.client
    );
    // Hop on node B: the proxy's delivery into the server pod.
    assert!(
        num(&fast.server, "tcp_received") < FAST / 8,
        "server {:?}",
        fast.server
    );
}

#[test]
fn without_sockmap_the_same_transfer_goes_through_tcp() {
    let Some(outcomes) = transfer(89, false) else {
        return;
    };
    for (o, kind) in outcomes.iter().zip([Kind::Slow, Kind::Fast]) {
        assert_intact(o, kind);
        let (upload, reply) = kind.sizes();
        assert!(
            num(&o.client, "tcp_acked") >= upload,
            "client {:?}",
            o.client
        );
        assert!(
            num(&o.client, "tcp_received") >= reply,
            "client {:?}",
            o.client
        );
        assert!(
            num(&o.server, "tcp_received") >= upload,
            "server {:?}",
            o.server
        );
    }
}
