//! Loopback fixtures for the socket load-balancing tests: named TCP and UDP
//! backends, the `strait-probe` client run inside a cgroup, and service
//! builders.
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;

use strait::datapath::{L4Backend, L4LoadBalancer, L4Mode, L4Protocol, L4Service};

/// A TCP server on 127.0.0.1 that writes `name\n` to every connection. The
/// thread lives until the test process exits.
pub fn tcp_backend(name: &str) -> SocketAddrV4 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let addr = v4(l.local_addr().unwrap());
    serve_name(l, name);
    addr
}

/// Serves `name\n` to every connection on `l` (which may live in another
/// network namespace) from a thread that lives until the process exits.
pub fn serve_name(l: TcpListener, name: &str) {
    deep_backlog(&l);
    let name = name.to_string();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = writeln!(s, "{name}");
        }
    });
}

/// A UDP server on 127.0.0.1 that answers every datagram with `name`.
pub fn udp_backend(name: &str) -> SocketAddrV4 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind udp backend");
    let addr = v4(s.local_addr().unwrap());
    let name = name.to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(name.as_bytes(), from);
        }
    });
    addr
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("bound to 127.0.0.1"),
    }
}

/// An L4 TCP service `vip` over `backends` (weight, healthy).
pub fn service(
    vip: SocketAddrV4,
    lb: L4LoadBalancer,
    backends: &[(SocketAddrV4, u32, bool)],
) -> L4Service {
    L4Service {
        host: format!("svc-{}-{}.test.svc.cluster.local", vip.ip(), vip.port()),
        vip: IpAddr::V4(*vip.ip()),
        port: vip.port(),
        protocol: L4Protocol::Tcp,
        mode: L4Mode::L4,
        load_balancer: lb,
        backends: backends
            .iter()
            .map(|&(a, weight, healthy)| L4Backend {
                addr: SocketAddr::V4(a),
                weight,
                healthy,
            })
            .collect(),
    }
}

/// Runs `strait-probe` (path `probe`) with `args`, inside `cgroup` when
/// given, and returns its output lines. Panics when the probe fails.
pub fn probe(probe: &str, cgroup: Option<&Path>, args: &[&str]) -> Vec<String> {
    let mut cmd = Command::new(probe);
    if let Some(cg) = cgroup {
        cmd.arg("--cgroup").arg(cg);
    }
    let out = cmd.args(args).output().expect("run strait-probe");
    assert!(
        out.status.success(),
        "strait-probe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Runs `strait-probe load` (path `probe`) as an earlier loader would
/// (a daemon that then stops): pins the data path of `node` under
/// `bpffs`, attaches it to `cgroup`, balances TCP `vip` over `backends`,
/// and exits. Panics when the probe fails.
pub fn load_and_exit(
    probe: &str,
    bpffs: &Path,
    node: &str,
    cgroup: &Path,
    vip: SocketAddrV4,
    backends: &[SocketAddrV4],
) {
    let list: Vec<String> = backends.iter().map(|a| a.to_string()).collect();
    let out = Command::new(probe)
        .args(["load", "--bpffs"])
        .arg(bpffs)
        .args(["--node", node, "--attach"])
        .arg(cgroup)
        .args(["--service", &format!("{vip}/tcp={}", list.join(","))])
        .output()
        .expect("run strait-probe load");
    assert!(
        out.status.success(),
        "loader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How many times each line occurs.
pub fn tally<S: AsRef<str>>(lines: &[S]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l.as_ref().to_string()).or_default() += 1;
    }
    m
}

/// Checks UDP through the kernel-balanced `vip` as a client in `cgroup`
/// sees it (`probe`: the strait-probe binary): `n` datagrams from an
/// unconnected socket (sendmsg/recvmsg) reach every one of the backends
/// named `names` and no other, each reply from the VIP as addressed;
/// `connected` datagrams from a connected socket (connect) all reach one
/// of them, replies from the VIP too. The datapath counts `n + 1`
/// connections (one per unconnected datagram, one for the socket).
pub fn assert_udp_through_vip(
    probe_bin: &str,
    cgroup: &Path,
    vip: SocketAddr,
    names: &[&str],
    n: usize,
    connected: usize,
) {
    let from = format!("{vip} ");
    let lines = probe(
        probe_bin,
        Some(cgroup),
        &["udp", &vip.to_string(), &n.to_string()],
    );
    let seen: Vec<&str> = lines
        .iter()
        .map(|l| {
            l.strip_prefix(&from)
                .unwrap_or_else(|| panic!("reply not from the VIP: {l} ({lines:?})"))
        })
        .collect();
    assert_eq!(tally(&seen).keys().collect::<Vec<_>>(), names, "{lines:?}");
    let lines = probe(
        probe_bin,
        Some(cgroup),
        &["udp", &vip.to_string(), &connected.to_string(), "--connect"],
    );
    let seen = tally(&lines);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let only = seen.keys().next().unwrap();
    assert!(
        names.iter().any(|n| only == &format!("{from}{n}")),
        "{only}: not one of {names:?} from the VIP"
    );
}

/// Asserts `count` of `n` trials is within 5 standard deviations of the
/// binomial mean for success probability `p` (a false failure about once
/// in 3.5 million runs).
pub fn assert_binomial(what: &str, count: usize, n: usize, p: f64) {
    let mean = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (count as f64 - mean).abs() <= 5.0 * sigma,
        "{what}: {count} of {n}, expected {mean:.0} ± {:.0} (5σ)",
        5.0 * sigma
    );
}

/// One test's data path: a private bpffs, a pods cgroup and a [`Datapath`]
/// attached to it. Dropped in field order: the data path is cleaned up
/// (programs detached, pins removed), then the cgroup, then the bpffs.
pub struct Fixture {
    /// The loaded, attached data path (`None` once cleaned up).
    pub dp: Option<strait::datapath::Datapath>,
    /// The "pods" cgroup the programs are attached to.
    pub cg: crate::cgroup::TestCgroup,
    /// The bpffs the pins live in.
    pub bpffs: crate::bpffs::TestBpffs,
}

impl Fixture {
    /// Loads and attaches a data path for node `name` with the node proxy
    /// at `outbound`.
    pub fn new(p: &crate::privileged::Privileged, name: &str, outbound: SocketAddrV4) -> Self {
        let bpffs = crate::bpffs::TestBpffs::new().expect("mount bpffs");
        let cg = crate::cgroup::TestCgroup::new(&p.cgroup2, name).expect("create cgroup");
        let mut config = strait::datapath::DatapathConfig::new(name);
        config.bpffs = bpffs.path().to_path_buf();
        config.outbound = outbound;
        let mut dp = strait::datapath::Datapath::new(&config).expect("load data path");
        dp.attach(cg.path()).expect("attach to cgroup");
        Self {
            dp: Some(dp),
            cg,
            bpffs,
        }
    }

    /// The data path.
    pub fn dp(&mut self) -> &mut strait::datapath::Datapath {
        self.dp.as_mut().expect("data path already cleaned up")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(dp) = self.dp.take() {
            if let Err(e) = dp.cleanup() {
                eprintln!("warning: data path cleanup: {e:#}");
            }
        }
    }
}

/// Raises the open-file soft limit to the hard limit, for tests that hold
/// 1,000 connections open at once.
pub fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let r = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: r.maximum,
            maximum: r.maximum,
        },
    );
}

/// Deepens a listener's accept queue to 4,096 (std listens with 128): a
/// burst of connections that outruns `accept()` would otherwise have SYNs
/// dropped and retried a second later. Calling `listen()` again on a
/// listening socket only changes its backlog.
pub fn deep_backlog(l: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen on a valid socket descriptor.
    unsafe { libc::listen(l.as_raw_fd(), 4096) };
}
