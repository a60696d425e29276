//! Tier 2: socket-level L4 load balancing (`cgroup/connect4`, `connect6`,
//! `getpeername4`) with real sockets in a real cgroup. Backends listen on
//! loopback; VIPs are loopback addresses nothing listens on, so a connect
//! that is not rewritten is refused.
use std::net::SocketAddrV4;

use strait::datapath::{L4LoadBalancer, L4Protocol};
use strait_tests::lb::{assert_binomial, probe, service, tally, tcp_backend, Fixture};
use strait_tests::privileged;

const PROBE: &str = env!("CARGO_BIN_EXE_strait-probe");
/// No proxy in these tests; REDIRECT is covered by kernel_redirect.
const NO_PROXY: &str = "127.0.0.1:1";

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

#[test]
fn connect4_balances_a_vip_for_processes_in_the_cgroup_only() {
    let Some(p) = privileged::require("connect4_balances_a_vip_for_processes_in_the_cgroup_only")
    else {
        return;
    };
    let b = [tcp_backend("b0"), tcp_backend("b1"), tcp_backend("b2")];
    let vip = addr("127.100.0.1:18080");
    let mut fx = Fixture::new(&p, "lb-basic", addr(NO_PROXY));
    let backends: Vec<_> = b.iter().map(|&a| (a, 1, true)).collect();
    let report = fx
        .dp()
        .apply(&[service(vip, L4LoadBalancer::Random, &backends)])
        .unwrap();
    assert_eq!(report.added, 1);

    // 60 connections over 3 backends: P(a backend never chosen) = 3·(2/3)^60 ≈ 1e-10.
    let lines = probe(PROBE, Some(fx.cg.path()), &["tcp", &vip.to_string(), "60"]);
    let seen = tally(&lines);
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["b0", "b1", "b2"],
        "{seen:?}"
    );
    assert_eq!(
        fx.dp().service_counters(vip, L4Protocol::Tcp).connections,
        60
    );
    let per_backend: u64 = b
        .iter()
        .map(|&a| fx.dp().backend_connections(a, L4Protocol::Tcp))
        .sum();
    assert_eq!(per_backend, 60);

    // getpeername() reports the VIP, not the backend.
    let lines = probe(
        PROBE,
        Some(fx.cg.path()),
        &["tcp", &vip.to_string(), "3", "--peer"],
    );
    for l in &lines {
        assert!(l.starts_with(&format!("{vip} b")), "{l}");
    }

    // A process outside the cgroup is not rewritten: nothing listens on the VIP.
    assert_eq!(
        probe(PROBE, None, &["tcp", &vip.to_string()]),
        ["error ConnectionRefused"]
    );
}

#[test]
fn connect4_leaves_unknown_destinations_alone() {
    let Some(p) = privileged::require("connect4_leaves_unknown_destinations_alone") else {
        return;
    };
    let direct = tcp_backend("direct");
    let mut fx = Fixture::new(&p, "lb-pass", addr(NO_PROXY));
    // A service on another port of the same address does not capture `direct`.
    let other = SocketAddrV4::new(*direct.ip(), direct.port().wrapping_add(1).max(1));
    fx.dp()
        .apply(&[service(
            other,
            L4LoadBalancer::Random,
            &[(tcp_backend("svc"), 1, true)],
        )])
        .unwrap();
    assert_eq!(
        probe(
            PROBE,
            Some(fx.cg.path()),
            &["tcp", &direct.to_string(), "3"]
        ),
        ["direct"; 3]
    );
}

#[test]
fn weighted_random_follows_the_weights() {
    let Some(p) = privileged::require("weighted_random_follows_the_weights") else {
        return;
    };
    let b = [tcp_backend("w60"), tcp_backend("w30"), tcp_backend("w10")];
    let vip = addr("127.100.0.2:80");
    let mut fx = Fixture::new(&p, "lb-weights", addr(NO_PROXY));
    let backends = [(b[0], 60, true), (b[1], 30, true), (b[2], 10, true)];
    fx.dp()
        .apply(&[service(vip, L4LoadBalancer::Random, &backends)])
        .unwrap();
    let n = 3000;
    let lines = probe(
        PROBE,
        Some(fx.cg.path()),
        &["tcp", &vip.to_string(), &n.to_string()],
    );
    let seen = tally(&lines);
    assert_eq!(seen.values().sum::<usize>(), n, "{seen:?}");
    for (name, p) in [("w60", 0.6), ("w30", 0.3), ("w10", 0.1)] {
        let count = seen.get(name).copied().unwrap_or(0);
        assert_binomial(name, count, n, p);
        eprintln!("{name}: {count} of {n}");
    }
}

#[test]
fn round_robin_takes_turns() {
    let Some(p) = privileged::require("round_robin_takes_turns") else {
        return;
    };
    let b = [tcp_backend("r0"), tcp_backend("r1"), tcp_backend("r2")];
    let vip = addr("127.100.0.3:80");
    let mut fx = Fixture::new(&p, "lb-rr", addr(NO_PROXY));
    let backends: Vec<_> = b.iter().map(|&a| (a, 1, true)).collect();
    fx.dp()
        .apply(&[service(vip, L4LoadBalancer::RoundRobin, &backends)])
        .unwrap();
    let lines = probe(PROBE, Some(fx.cg.path()), &["tcp", &vip.to_string(), "300"]);
    let seen = tally(&lines);
    // One cursor per CPU (Envoy's round robin is per worker): each CPU's
    // turns are exact, so a backend is off by at most one per CPU.
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) } as usize;
    for name in ["r0", "r1", "r2"] {
        let c = seen.get(name).copied().unwrap_or(0);
        assert!(c.abs_diff(100) <= cpus, "{name}: {c} of 300 ({seen:?})");
    }
}

#[test]
fn unhealthy_backends_are_never_picked() {
    let Some(p) = privileged::require("unhealthy_backends_are_never_picked") else {
        return;
    };
    let vip = addr("127.100.0.4:80");
    let mut fx = Fixture::new(&p, "lb-health", addr(NO_PROXY));
    let backends = [
        (tcp_backend("ok0"), 1, true),
        (tcp_backend("draining"), 1, false),
        (tcp_backend("ok1"), 1, true),
    ];
    fx.dp()
        .apply(&[service(vip, L4LoadBalancer::Random, &backends)])
        .unwrap();
    let lines = probe(PROBE, Some(fx.cg.path()), &["tcp", &vip.to_string(), "100"]);
    let seen = tally(&lines);
    // P(a healthy backend unseen in 100) = 2·2^-100.
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["ok0", "ok1"], "{seen:?}");
}

#[test]
fn no_usable_backend_refuses_at_once() {
    let Some(p) = privileged::require("no_usable_backend_refuses_at_once") else {
        return;
    };
    let empty = addr("127.100.0.5:80");
    let all_down = addr("127.100.0.6:80");
    let mut fx = Fixture::new(&p, "lb-none", addr(NO_PROXY));
    fx.dp()
        .apply(&[
            service(empty, L4LoadBalancer::Random, &[]),
            service(
                all_down,
                L4LoadBalancer::Maglev,
                &[(tcp_backend("down"), 1, false)],
            ),
        ])
        .unwrap();
    for vip in [empty, all_down] {
        let lines = probe(
            PROBE,
            Some(fx.cg.path()),
            &["--elapsed", "tcp", &vip.to_string(), "5"],
        );
        assert_eq!(lines.len(), 5);
        for l in &lines {
            let (what, us) = l.rsplit_once(' ').unwrap();
            assert_eq!(what, "error ConnectionRefused", "{vip}: {l}");
            let us: u64 = us.trim_end_matches("us").parse().unwrap();
            assert!(us < 100_000, "{vip}: refused after {us} µs");
            eprintln!("{vip}: refused after {us} µs");
        }
        let c = fx.dp().service_counters(vip, L4Protocol::Tcp);
        assert_eq!((c.connections, c.no_backend), (0, 5), "{vip}");
    }
}

#[test]
fn connect6_balances_ipv4_mapped_destinations() {
    let Some(p) = privileged::require("connect6_balances_ipv4_mapped_destinations") else {
        return;
    };
    let b = [tcp_backend("m0"), tcp_backend("m1"), tcp_backend("m2")];
    let vip = addr("127.100.0.7:80");
    let mut fx = Fixture::new(&p, "lb-v6", addr(NO_PROXY));
    let backends: Vec<_> = b.iter().map(|&a| (a, 1, true)).collect();
    fx.dp()
        .apply(&[service(vip, L4LoadBalancer::Random, &backends)])
        .unwrap();
    let mapped = format!("[::ffff:{}]:{}", vip.ip(), vip.port());
    let lines = probe(PROBE, Some(fx.cg.path()), &["tcp", &mapped, "60", "--peer"]);
    // getpeername() on the IPv6 socket reports the mapped VIP.
    let names: Vec<&str> = lines
        .iter()
        .map(|l| {
            l.strip_prefix(&format!("{mapped} "))
                .unwrap_or_else(|| panic!("peer is not the VIP: {l}"))
        })
        .collect();
    let seen = tally(&names);
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["m0", "m1", "m2"],
        "{seen:?}"
    );
}

#[test]
fn apply_swaps_backend_sets_and_deletes_stale_services() {
    let Some(p) = privileged::require("apply_swaps_backend_sets_and_deletes_stale_services") else {
        return;
    };
    let (old, new) = (tcp_backend("old"), tcp_backend("new"));
    let vip = addr("127.100.0.8:80");
    let gone = addr("127.100.0.9:80");
    let mut fx = Fixture::new(&p, "lb-apply", addr(NO_PROXY));
    let v1 = [
        service(vip, L4LoadBalancer::Random, &[(old, 1, true)]),
        service(gone, L4LoadBalancer::Random, &[(old, 1, true)]),
    ];
    assert_eq!(fx.dp().apply(&v1).unwrap().added, 2);
    assert_eq!(fx.dp().apply(&v1).unwrap().unchanged, 2);
    let cg = fx.cg.path().to_path_buf();
    assert_eq!(
        probe(PROBE, Some(&cg), &["tcp", &vip.to_string(), "3"]),
        ["old"; 3]
    );

    let before = fx.dp().kernel_entries();
    assert_eq!((before.services, before.backend_slots), (2, 2));
    let v2 = [service(
        vip,
        L4LoadBalancer::Maglev,
        &[(new, 1, true), (tcp_backend("new2"), 1, false)],
    )];
    let r = fx.dp().apply(&v2).unwrap();
    assert_eq!((r.updated, r.removed), (1, 1), "{r:?}");
    // The old sets are gone: one service, one healthy slot, one table.
    let after = fx.dp().kernel_entries();
    assert_eq!(
        (after.services, after.backend_slots, after.maglev_tables),
        (1, 1, 1)
    );
    assert_eq!(
        probe(PROBE, Some(&cg), &["tcp", &vip.to_string(), "3"]),
        ["new"; 3]
    );
    assert_eq!(
        probe(PROBE, Some(&cg), &["tcp", &gone.to_string()]),
        ["error ConnectionRefused"]
    );
    assert_eq!(fx.dp().service_count(), 1);

    // Removing everything leaves the tables empty.
    assert_eq!(fx.dp().apply(&[]).unwrap().removed, 1);
    assert_eq!(
        fx.dp().kernel_entries(),
        strait::datapath::KernelEntries::default()
    );
}
