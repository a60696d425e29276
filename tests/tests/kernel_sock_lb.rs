//! Tier 2: the `cgroup/connect4` socket load balancer with real sockets in a
//! real cgroup. Backends listen on loopback; the virtual IP is a loopback
//! address nothing listens on, so an unrewritten connect is refused.
use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddrV4, TcpListener};
use std::process::Command;

use strait_tests::{cgroup::TestCgroup, privileged};

/// Starts a TCP server on 127.0.0.1 that greets every connection with `name`.
fn backend(name: &str) -> SocketAddrV4 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = match l.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    let name = name.to_string();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = writeln!(s, "{name}");
        }
    });
    addr
}

fn probe(cgroup: Option<&TestCgroup>, addr: SocketAddrV4, count: usize) -> Vec<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strait-probe"));
    if let Some(cg) = cgroup {
        cmd.arg("--cgroup").arg(cg.path());
    }
    let out = cmd
        .args(["tcp", &addr.to_string(), &count.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strait-probe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn connect4_balances_a_vip_for_processes_in_the_cgroup_only() {
    let Some(p) = privileged::require("connect4_balances_a_vip_for_processes_in_the_cgroup_only")
    else {
        return;
    };
    let backends = [backend("b0"), backend("b1"), backend("b2")];
    let vip: SocketAddrV4 = "127.100.0.1:18080".parse().unwrap();
    let cg = TestCgroup::new(&p.cgroup2, "lb").unwrap();
    let mut ebpf = strait::datapath::load().unwrap();
    strait::datapath::attach_connect4(&mut ebpf, cg.path()).unwrap();
    strait::datapath::put_l4_service(&mut ebpf, vip, proxy_common::proto::TCP, 1, &backends)
        .unwrap();

    // 60 connections over 3 backends: P(a backend never chosen) = 3·(2/3)^60 ≈ 1e-10.
    let lines = probe(Some(&cg), vip, 60);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for l in &lines {
        *seen.entry(l.as_str()).or_default() += 1;
    }
    assert_eq!(lines.len(), 60);
    for b in ["b0", "b1", "b2"] {
        assert!(
            seen.get(b).copied().unwrap_or(0) > 0,
            "backend {b} never reached: {seen:?}"
        );
    }
    assert_eq!(
        seen.values().sum::<usize>(),
        60,
        "unexpected replies: {seen:?}"
    );

    // A process outside the cgroup is not rewritten: nothing listens on the VIP.
    assert_eq!(
        probe(None, vip, 1),
        vec!["error ConnectionRefused".to_string()]
    );
}

#[test]
fn connect4_leaves_unknown_destinations_alone() {
    let Some(p) = privileged::require("connect4_leaves_unknown_destinations_alone") else {
        return;
    };
    let direct = backend("direct");
    let cg = TestCgroup::new(&p.cgroup2, "passthrough").unwrap();
    let mut ebpf = strait::datapath::load().unwrap();
    strait::datapath::attach_connect4(&mut ebpf, cg.path()).unwrap();
    // A service on another port of the same address does not capture `direct`.
    let other = SocketAddrV4::new(*direct.ip(), direct.port().wrapping_add(1).max(1));
    strait::datapath::put_l4_service(
        &mut ebpf,
        other,
        proxy_common::proto::TCP,
        1,
        &[backend("svc")],
    )
    .unwrap();
    assert_eq!(probe(Some(&cg), direct, 3), vec!["direct"; 3]);
}
