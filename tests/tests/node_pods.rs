//! Namespace tests of the simulated node: pods reach each other through the
//! node, processes land in their pod's netns and cgroup, and dropping the
//! node (also during a panic) removes everything it made.
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use strait_tests::node::echo::{self, Seen, Then};
use strait_tests::node::{Node, PodSpec};

const PROBE: &str = env!("CARGO_BIN_EXE_strait-probe");

/// Listens in `pod` on `<pod ip>:port`; answers each connection with
/// `hello from <pod> to <peer ip>`, so the client sees who it reached and
/// what source address arrived (no NAT on the way).
fn serve_hello(node: &Node, pod: &str, port: u16) -> Seen {
    let pod = node.pod("default", pod).expect("pod");
    let l = echo::listen(&pod.netns, (pod.ip, port)).unwrap();
    let name = pod.name().to_string();
    echo::tcp(
        l,
        move |peer| format!("hello from {name} to {}", peer.ip()),
        Then::Close,
    )
}

/// Runs strait-probe in `pod`, connecting once to `addr`; its one line.
fn probe_from(node: &Node, pod: &str, addr: SocketAddr) -> String {
    let out = node
        .pod("default", pod)
        .expect("pod")
        .command(PROBE)
        .unwrap()
        .args(["tcp", &addr.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn pod_to_pod_tcp_goes_through_the_node() {
    let Some(p) = strait_tests::privileged::require("pod_to_pod_tcp_goes_through_the_node") else {
        return;
    };
    let mut node = Node::new(&p.cgroup2, "node-a", 7).unwrap();
    node.add_pod(PodSpec::new("client", &[("app", "client")]))
        .unwrap();
    node.add_pod(PodSpec::new("server", &[("app", "server")]))
        .unwrap();
    let client_ip = node.pod("default", "client").unwrap().ip;
    let server_ip = node.pod("default", "server").unwrap().ip;
    assert_eq!(client_ip.octets()[..3], [10, 244, 7]);
    assert_ne!(client_ip, server_ip);

    let server = serve_hello(&node, "server", 7000);
    let line = probe_from(&node, "client", SocketAddr::from((server_ip, 7000)));
    assert_eq!(line, format!("hello from server to {client_ip}"));
    assert_eq!(
        echo::peers(&server),
        [IpAddr::from(client_ip)],
        "one connection, no NAT"
    );

    // The path is pod -> node -> pod: the pod's only route out is via the
    // node's address, and the node forwards between the veths.
    let routes = Command::new("ip")
        .args(["-n", &node.pod("default", "client").unwrap().netns, "route"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains(&format!("default via {}", node.gateway())),
        "{routes}"
    );
    // Nothing listens in the node: a port not served in the pod is refused.
    let refused = probe_from(&node, "client", SocketAddr::from((server_ip, 7001)));
    assert_eq!(refused, "error ConnectionRefused");
}

fn netns_inode_of_pid(pid: u32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .ino()
}

fn cgroup_of_pid(pid: u32) -> String {
    // cgroup v2 line: "0::/strait-<id>/pods/default_web"
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .to_string()
}

fn relative_cgroup(cgroup2: &Path, dir: &Path) -> String {
    format!("/{}", dir.strip_prefix(cgroup2).unwrap().display())
}

#[test]
fn processes_run_in_their_pod_or_on_the_node() {
    let Some(p) = strait_tests::privileged::require("processes_run_in_their_pod_or_on_the_node")
    else {
        return;
    };
    let mut node = Node::new(&p.cgroup2, "node-a", 8).unwrap();
    node.add_pod(PodSpec::new("web", &[("app", "web")]))
        .unwrap();
    let pod = node.pod("default", "web").unwrap().clone();

    let mut in_pod = pod.command("sleep").unwrap().arg("30").spawn().unwrap();
    let mut on_node = node.command("sleep").unwrap().arg("30").spawn().unwrap();

    let pod_ns = std::fs::metadata(format!("/run/netns/{}", pod.netns))
        .unwrap()
        .ino();
    let node_ns = std::fs::metadata(format!("/run/netns/{}", node.netns()))
        .unwrap()
        .ino();
    let host_ns = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    assert_eq!(netns_inode_of_pid(in_pod.id()), pod_ns);
    assert_eq!(netns_inode_of_pid(on_node.id()), node_ns);
    assert!(pod_ns != host_ns && node_ns != host_ns);

    assert_eq!(
        cgroup_of_pid(in_pod.id()),
        relative_cgroup(&p.cgroup2, &pod.cgroup)
    );
    assert_eq!(pod.pids(), vec![in_pod.id() as i32]);
    let node_cg = cgroup_of_pid(on_node.id());
    assert_eq!(
        node_cg,
        relative_cgroup(&p.cgroup2, &node.cgroup().join("node"))
    );
    assert!(
        !node_cg.starts_with(&relative_cgroup(&p.cgroup2, &node.pods_cgroup())),
        "the daemon's cgroup must be outside the pods cgroup"
    );
    // The test process itself has not moved.
    assert_ne!(netns_inode_of_pid(std::process::id()), pod_ns);

    // The pod sees its own address on eth0.
    let out = pod
        .command("ip")
        .unwrap()
        .args(["-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{}/32", pod.ip)));

    drop(node);
    // Dropping the node killed both.
    assert!(in_pod.wait().unwrap().code().is_none());
    assert!(on_node.wait().unwrap().code().is_none());
}

/// Names a node made, to check they are gone after it is dropped.
struct Made {
    id: String,
    netns: Vec<String>,
    dirs: Vec<PathBuf>,
    children: Vec<std::process::Child>,
}

fn build_and_record(cgroup2: &Path, index: u8) -> (Node, Made) {
    let mut node = Node::new(cgroup2, "node-a", index).unwrap();
    node.add_pod(PodSpec::new("a", &[("app", "a")])).unwrap();
    node.add_pod(PodSpec::new("b", &[("app", "b")])).unwrap();
    let sleeper = node.pods()[0]
        .command("sleep")
        .unwrap()
        .arg("30")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = node.command("sleep").unwrap().arg("30").spawn().unwrap();
    // A pin in the node's bpffs, as the daemon makes them.
    assert!(is_bpffs(&node.bpffs_dir()));
    let made = Made {
        id: node.id().to_string(),
        netns: std::iter::once(node.netns().to_string())
            .chain(node.pods().iter().map(|p| p.netns.clone()))
            .collect(),
        dirs: vec![
            node.cgroup().to_path_buf(),
            node.tmp_dir().to_path_buf(),
            node.bpffs_dir(),
        ],
        children: vec![sleeper, daemon],
    };
    for ns in &made.netns {
        assert!(Path::new("/run/netns").join(ns).exists());
    }
    for d in &made.dirs {
        assert!(d.exists(), "{}", d.display());
    }
    (node, made)
}

fn is_bpffs(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&dir.to_str().unwrap()) && f.get(2) == Some(&"bpf")
    })
}

fn assert_all_gone(made: &mut Made) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(&made.id),
        "a mount of node {} is left",
        made.id
    );
    for ns in &made.netns {
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "netns {ns} left"
        );
    }
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&made.id));
    for d in &made.dirs {
        assert!(!d.exists(), "{} left", d.display());
    }
    // No interface with the node's id ever appears in the host namespace.
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&made.id));
    for child in &mut made.children {
        // Killed by the node's teardown, not exited on their own.
        let status = child.wait().unwrap();
        assert!(status.code().is_none(), "{status}");
    }
}

#[test]
fn drop_removes_everything() {
    let Some(p) = strait_tests::privileged::require("drop_removes_everything") else {
        return;
    };
    let (node, mut made) = build_and_record(&p.cgroup2, 9);
    drop(node);
    assert_all_gone(&mut made);
}

#[test]
fn a_panic_inside_the_test_still_removes_everything() {
    let Some(p) =
        strait_tests::privileged::require("a_panic_inside_the_test_still_removes_everything")
    else {
        return;
    };
    let made = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (_node, m) = build_and_record(&p.cgroup2, 10);
        *made.lock().unwrap() = Some(m);
        panic!("test failure while the node is up");
    }));
    assert!(result.is_err());
    let mut made = made.into_inner().unwrap().expect("node was built");
    assert_all_gone(&mut made);
}

#[test]
fn a_pod_reads_what_a_pod_wrote_over_a_stream() {
    // A longer exchange than one line, both ways, to show the path is a
    // normal TCP path (MTU, ARP, forwarding), not just a SYN that got through.
    let Some(p) = strait_tests::privileged::require("a_pod_reads_what_a_pod_wrote_over_a_stream")
    else {
        return;
    };
    let mut node = Node::new(&p.cgroup2, "node-a", 11).unwrap();
    node.add_pod(PodSpec::new("a", &[])).unwrap();
    node.add_pod(PodSpec::new("b", &[])).unwrap();
    let b = node.pod("default", "b").unwrap().clone();
    let addr = SocketAddr::from((b.ip, 7100));
    let listener = echo::listen(&b.netns, addr).unwrap();
    let echo = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        for line in BufReader::new(s).lines() {
            writeln!(w, "{}", line.unwrap().to_uppercase()).unwrap();
        }
    });
    let a = node.pod("default", "a").unwrap();
    let reply = a
        .run_in(move || {
            let s = std::net::TcpStream::connect(addr).unwrap();
            let mut w = s.try_clone().unwrap();
            let payload = "x".repeat(200_000);
            writeln!(w, "{payload}").unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).unwrap();
            line
        })
        .unwrap();
    assert_eq!(reply.trim_end().len(), 200_000);
    assert!(reply.starts_with("XXX"));
    echo.join().unwrap();
}
