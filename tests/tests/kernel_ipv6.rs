//! Tier 2: native IPv6 services in the socket programs (`cgroup/connect6`,
//! `sendmsg6`, `recvmsg6`, `getpeername6`) with real sockets in a real
//! cgroup. Backends listen on `[::1]`; VIPs are addresses of
//! `fd00:5719::/64`, which nothing on the host holds, so a connection that
//! is not rewritten never reaches a backend. The Maglev test gives loopback
//! 32 client addresses of `fd00:5719:c::/64` and removes them afterwards,
//! pass or fail.
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::Command;

use strait::datapath::{L4Backend, L4LoadBalancer, L4Mode, L4Protocol, L4Service};
use strait_tests::lb::{
    assert_binomial, assert_udp_through_vip, probe, serve_name, tally, tcp_backend, Fixture,
};
use strait_tests::privileged;

const PROBE: &str = env!("CARGO_BIN_EXE_strait-probe");
/// The node proxy: an IPv4 listener, as the daemon's.
const PROXY: &str = "127.0.0.1:1";

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A TCP server on `[::1]` that writes `name\n` to every connection.
fn tcp_backend6(name: &str) -> SocketAddr {
    let l = TcpListener::bind("[::1]:0").expect("bind [::1]");
    let addr = l.local_addr().unwrap();
    serve_name(l, name);
    addr
}

/// A UDP server on `[::1]` that answers every datagram with `name`.
fn udp_backend6(name: &str) -> SocketAddr {
    let s = UdpSocket::bind("[::1]:0").expect("bind udp [::1]");
    let addr = s.local_addr().unwrap();
    let name = name.to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(name.as_bytes(), from);
        }
    });
    addr
}

/// An L4 service `vip` over `backends` (address, weight, healthy).
fn service(
    host: &str,
    vip: SocketAddr,
    protocol: L4Protocol,
    lb: L4LoadBalancer,
    backends: &[(SocketAddr, u32, bool)],
) -> L4Service {
    L4Service {
        host: host.into(),
        vip: vip.ip(),
        port: vip.port(),
        protocol,
        mode: L4Mode::L4,
        load_balancer: lb,
        backends: backends
            .iter()
            .map(|&(addr, weight, healthy)| L4Backend {
                addr,
                weight,
                healthy,
            })
            .collect(),
    }
}

#[test]
fn connect6_spreads_a_native_ipv6_vip_and_getpeername_reports_the_vip() {
    let Some(p) =
        privileged::require("connect6_spreads_a_native_ipv6_vip_and_getpeername_reports_the_vip")
    else {
        return;
    };
    let b = [tcp_backend6("b0"), tcp_backend6("b1"), tcp_backend6("b2")];
    let vip = sock("[fd00:5719::1]:8080");
    let mut fx = Fixture::new(&p, "v6-spread", sock_v4(PROXY));
    let backends: Vec<_> = b.iter().map(|&a| (a, 1, true)).collect();
    let report = fx
        .dp()
        .apply(&[service(
            "v6.test.svc.cluster.local",
            vip,
            L4Protocol::Tcp,
            L4LoadBalancer::Random,
            &backends,
        )])
        .unwrap();
    assert_eq!(report.added, 1, "{report:?}");
    assert!(report.skipped.is_empty(), "{report:?}");
    let cg = fx.cg.path().to_path_buf();

    // Uniform random over 3: each count is binomial(n, 1/3); within 5σ.
    let n = 300;
    let lines = probe(PROBE, Some(&cg), &["tcp", &vip.to_string(), &n.to_string()]);
    let seen = tally(&lines);
    assert_eq!(seen.values().sum::<usize>(), n, "{seen:?}");
    for name in ["b0", "b1", "b2"] {
        assert_binomial(name, seen.get(name).copied().unwrap_or(0), n, 1.0 / 3.0);
    }
    assert_eq!(
        fx.dp().service_counters(vip, L4Protocol::Tcp).connections,
        n as u64
    );
    let per_backend: u64 = b
        .iter()
        .map(|&a| fx.dp().backend_connections(a, L4Protocol::Tcp))
        .sum();
    assert_eq!(per_backend, n as u64);

    // getpeername() reports the VIP, not the backend on [::1].
    let lines = probe(PROBE, Some(&cg), &["tcp", &vip.to_string(), "6", "--peer"]);
    for l in &lines {
        assert!(l.starts_with(&format!("{vip} b")), "{l}");
    }

    // Outside the cgroup nothing is rewritten: the VIP reaches no backend.
    let outside = probe(PROBE, None, &["tcp", &vip.to_string()]);
    assert!(outside[0].starts_with("error"), "{outside:?}");

    // Removing the service: connections are no longer rewritten.
    assert_eq!(fx.dp().apply(&[]).unwrap().removed, 1);
    assert_eq!(
        fx.dp().kernel_entries(),
        strait::datapath::KernelEntries::default()
    );
    let after = probe(PROBE, Some(&cg), &["tcp", &vip.to_string()]);
    assert!(after[0].starts_with("error"), "{after:?}");
}

#[test]
fn udp_over_an_ipv6_vip_replies_come_from_the_vip() {
    let Some(p) = privileged::require("udp_over_an_ipv6_vip_replies_come_from_the_vip") else {
        return;
    };
    let vip = sock("[fd00:5719::2]:5353");
    let mut fx = Fixture::new(&p, "v6-udp", sock_v4(PROXY));
    fx.dp()
        .apply(&[service(
            "dns6.test.svc.cluster.local",
            vip,
            L4Protocol::Udp,
            L4LoadBalancer::Random,
            &[(udp_backend6("u0"), 1, true), (udp_backend6("u1"), 1, true)],
        )])
        .unwrap();
    let cg = fx.cg.path().to_path_buf();

    // Unconnected (sendmsg6 / recvmsg6): each datagram balanced
    // (P(a backend unseen in 40) = 2·2^-40), every reply from the VIP.
    // Connected (connect6 / recvmsg6): one backend for the socket's life,
    // replies still from the VIP.
    assert_udp_through_vip(PROBE, &cg, vip, &["u0", "u1"], 40, 10);
    assert_eq!(
        fx.dp().service_counters(vip, L4Protocol::Udp).connections,
        41
    );
}

#[test]
fn a_dual_stack_service_answers_on_both_vips_from_its_own_family() {
    let Some(p) =
        privileged::require("a_dual_stack_service_answers_on_both_vips_from_its_own_family")
    else {
        return;
    };
    // One cluster with both EndpointSlices' addresses, as the config
    // compiles a dual-stack Service: each VIP keeps its own family.
    let backends = [
        (SocketAddr::V4(tcp_backend("v4-a")), 1, true),
        (tcp_backend6("v6-a"), 1, true),
        (SocketAddr::V4(tcp_backend("v4-b")), 1, true),
        (tcp_backend6("v6-b"), 1, true),
    ];
    let host = "dual.test.svc.cluster.local";
    let vip4 = sock("127.100.19.1:80");
    let vip6 = sock("[fd00:5719::3]:80");
    let mut fx = Fixture::new(&p, "v6-dual", sock_v4(PROXY));
    let r = fx
        .dp()
        .apply(&[
            service(
                host,
                vip4,
                L4Protocol::Tcp,
                L4LoadBalancer::RoundRobin,
                &backends,
            ),
            service(
                host,
                vip6,
                L4Protocol::Tcp,
                L4LoadBalancer::RoundRobin,
                &backends,
            ),
        ])
        .unwrap();
    assert_eq!(r.added, 2, "{r:?}");
    assert_eq!(fx.dp().kernel_entries().backend_slots, 4);
    let cg = fx.cg.path().to_path_buf();
    for (vip, family) in [(vip4, "v4-"), (vip6, "v6-")] {
        let lines = probe(PROBE, Some(&cg), &["tcp", &vip.to_string(), "20", "--peer"]);
        let names: Vec<&str> = lines
            .iter()
            .map(|l| {
                l.strip_prefix(&format!("{vip} "))
                    .unwrap_or_else(|| panic!("peer is not the VIP {vip}: {l}"))
            })
            .collect();
        let seen = tally(&names);
        // Round robin, one cursor per CPU: both backends of the family,
        // never one of the other family.
        assert_eq!(seen.len(), 2, "{vip}: {seen:?}");
        assert!(
            seen.keys().all(|k| k.starts_with(family)),
            "{vip}: {seen:?}"
        );
    }
}

#[test]
fn redirect_mode_tcp_on_an_ipv6_vip_is_refused_not_bypassed() {
    let Some(p) = privileged::require("redirect_mode_tcp_on_an_ipv6_vip_is_refused_not_bypassed")
    else {
        return;
    };
    let vip = sock("[fd00:5719::4]:80");
    let mut fx = Fixture::new(&p, "v6-redirect", sock_v4("127.0.0.1:15001"));
    let mut svc = service(
        "policy6.test.svc.cluster.local",
        vip,
        L4Protocol::Tcp,
        L4LoadBalancer::Random,
        &[(tcp_backend6("direct"), 1, true)],
    );
    svc.mode = L4Mode::Redirect;
    let r = fx.dp().apply(&[svc]).unwrap();
    assert_eq!(r.refused.len(), 1, "{r:?}");
    let cg = fx.cg.path().to_path_buf();
    assert_eq!(
        probe(PROBE, Some(&cg), &["tcp", &vip.to_string(), "3"]),
        ["error ConnectionRefused"; 3]
    );
    let c = fx.dp().service_counters(vip, L4Protocol::Tcp);
    assert_eq!((c.connections, c.no_backend), (0, 3));

    // UDP on a REDIRECT-mode port is balanced in the kernel (the proxy has
    // no UDP listener), as for IPv4; nothing is refused.
    let udp_vip = sock("[fd00:5719::4]:53");
    let mut tcp = service(
        "policy6.test.svc.cluster.local",
        vip,
        L4Protocol::Tcp,
        L4LoadBalancer::Random,
        &[(tcp_backend6("direct"), 1, true)],
    );
    tcp.mode = L4Mode::Redirect;
    let mut udp = service(
        "policy6.test.svc.cluster.local",
        udp_vip,
        L4Protocol::Udp,
        L4LoadBalancer::Random,
        &[(udp_backend6("dns"), 1, true)],
    );
    udp.mode = L4Mode::Redirect;
    let r = fx.dp().apply(&[tcp, udp]).unwrap();
    assert_eq!((r.added, r.refused.len()), (1, 1), "{r:?}");
    assert_eq!(
        probe(PROBE, Some(&cg), &["udp", &udp_vip.to_string(), "2"]),
        [format!("{udp_vip} dns"), format!("{udp_vip} dns")]
    );

    // A meshed pod's IPv6 address: refused while redirection is on.
    let pod = tcp_backend6("pod");
    fx.dp().set_workloads(&[pod.ip()]).unwrap();
    assert_eq!(
        probe(PROBE, Some(&cg), &["tcp", &pod.to_string()]),
        ["error ConnectionRefused"]
    );
    fx.dp().set_workloads(&[]).unwrap();
    assert_eq!(probe(PROBE, Some(&cg), &["tcp", &pod.to_string()]), ["pod"]);
}

#[test]
fn redirect_mode_ipv6_goes_to_the_proxys_ipv6_listener_with_its_original_destination() {
    let name = "redirect_mode_ipv6_goes_to_the_proxys_ipv6_listener_with_its_original_destination";
    let Some(p) = privileged::require(name) else {
        return;
    };
    // The node proxy's IPv6 listener on [::1] (the daemon's --outbound6),
    // reading the original destination from the pinned map as the daemon
    // does, and answering with it.
    let proxy = TcpListener::bind("[::1]:0").unwrap();
    let SocketAddr::V6(outbound6) = proxy.local_addr().unwrap() else {
        unreachable!()
    };
    let mut fx = Fixture::new(&p, "v6-proxy", sock_v4("127.0.0.1:15001"));
    let vip = sock("[fd00:5719::5]:80");
    let mut svc = service(
        "policy6.test.svc.cluster.local",
        vip,
        L4Protocol::Tcp,
        L4LoadBalancer::Random,
        &[(tcp_backend6("bypassed-the-proxy"), 1, true)],
    );
    svc.mode = L4Mode::Redirect;
    fx.dp().set_outbound6(Some(outbound6)).unwrap();
    let r = fx.dp().apply(&[svc]).unwrap();
    assert!(r.refused.is_empty(), "{r:?}");
    let pod = tcp_backend6("pod-bypassed-the-proxy");
    fx.dp().set_workloads(&[pod.ip()]).unwrap();

    let table = strait::datapath::OriginalDestinations::open(fx.dp().pin_dir()).unwrap();
    let n = 40;
    let accepting = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..n {
            let (mut s, peer) = proxy.accept().unwrap();
            let orig = table
                .get(peer)
                .map_or_else(|| "none".to_string(), |a| a.to_string());
            writeln!(s, "{orig}").unwrap();
            held.push(s);
        }
        held.len()
    });
    let cg = fx.cg.path().to_path_buf();
    let dests = [vip, pod];
    let mut args = vec!["hold".to_string(), n.to_string()];
    args.extend(dests.iter().map(|d| d.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lines = probe(PROBE, Some(&cg), &args);
    assert_eq!(accepting.join().unwrap(), n);
    assert_eq!(lines.len(), n);
    for (i, l) in lines.iter().enumerate() {
        let want = dests[i % dests.len()].to_string();
        let mut f = l.split(' ');
        let (_local, peer, seen) = (f.next(), f.next(), f.next());
        // The proxy saw the original destination; the client's
        // getpeername() shows it too, not the proxy.
        assert_eq!(seen, Some(want.as_str()), "connection {i}: {l}");
        assert_eq!(peer, Some(want.as_str()), "connection {i}: {l}");
    }
    let c = fx.dp().service_counters(vip, L4Protocol::Tcp);
    assert_eq!((c.connections, c.no_backend), ((n / 2) as u64, 0));

    // Without the IPv6 listener: refused again, never passed through.
    fx.dp().set_outbound6(None).unwrap();
    assert_eq!(
        probe(PROBE, Some(&cg), &["tcp", &vip.to_string(), "2"]),
        ["error ConnectionRefused"; 2]
    );
    assert_eq!(
        probe(PROBE, Some(&cg), &["tcp", &pod.to_string()]),
        ["error ConnectionRefused"]
    );
}

/// Client addresses `fd00:5719:c::1..=n` on loopback, removed on drop.
struct LoopbackClients {
    n: u32,
}

impl LoopbackClients {
    fn add(n: u32) -> Self {
        let guard = Self { n };
        let batch: String = (1..=n)
            .map(|i| format!("addr add {}/128 dev lo nodad\n", client(i)))
            .collect();
        assert!(ip_batch(&batch), "adding the client addresses to lo");
        guard
    }
}

impl Drop for LoopbackClients {
    fn drop(&mut self) {
        let batch: String = (1..=self.n)
            .map(|i| format!("addr del {}/128 dev lo\n", client(i)))
            .collect();
        let _ = ip_batch(&batch);
    }
}

fn client(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0xfd00, 0x5719, 0xc, 0, 0, 0, 0, 0)) + i as u128)
}

/// Runs `ip -batch` over `batch`; whether every command succeeded.
fn ip_batch(batch: &str) -> bool {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run ip");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(batch.as_bytes())
        .unwrap();
    child.wait().is_ok_and(|s| s.success())
}

/// The kernel's Maglev table for `backends` (sorted by address), built
/// with the one builder the data path uses: backend index per position.
fn maglev_table(backends: &[SocketAddr]) -> Vec<u32> {
    use proxy_common::{maglev, MAGLEV_TABLE_SIZE};
    let perms: Vec<(u64, u64)> = backends
        .iter()
        .map(|a| maglev::permutation(a.to_string().as_bytes(), MAGLEV_TABLE_SIZE))
        .collect();
    let mut next = vec![0u64; backends.len()];
    let mut table = vec![0u32; MAGLEV_TABLE_SIZE as usize];
    maglev::populate(&perms, |_| 1, &mut next, &mut table);
    table
}

/// The table position of a client bound to `c`, as connect6 hashes it.
fn position(c: &Ipv6Addr) -> usize {
    use proxy_common::{ipv6_client, ipv6_words, maglev_position};
    maglev_position(ipv6_client(ipv6_words(c.octets())) as u64) as usize
}

#[test]
fn maglev_over_ipv6_backends_moves_only_the_removed_backends_clients() {
    let Some(p) =
        privileged::require("maglev_over_ipv6_backends_moves_only_the_removed_backends_clients")
    else {
        return;
    };
    let n = 32u32;
    let _clients = LoopbackClients::add(n);
    let clients: Vec<Ipv6Addr> = (1..=n).map(client).collect();
    let names = ["m0", "m1", "m2", "m3"];
    let mut all: Vec<(SocketAddr, &str)> = names.iter().map(|&m| (tcp_backend6(m), m)).collect();
    all.sort();
    let vip = sock("[fd00:5719::5]:80");
    let host = "maglev6.test.svc.cluster.local";
    let mut fx = Fixture::new(&p, "v6-maglev", sock_v4(PROXY));
    let cg = fx.cg.path().to_path_buf();
    let run = |fx: &mut Fixture, set: &[(SocketAddr, &str)]| -> Vec<String> {
        let backends: Vec<_> = set.iter().map(|&(a, _)| (a, 1, true)).collect();
        fx.dp()
            .apply(&[service(
                host,
                vip,
                L4Protocol::Tcp,
                L4LoadBalancer::Maglev,
                &backends,
            )])
            .unwrap();
        let lines = probe(
            PROBE,
            Some(&cg),
            &[
                "tcp",
                &vip.to_string(),
                &n.to_string(),
                "--bind-from",
                &client(1).to_string(),
            ],
        );
        assert_eq!(lines.len(), n as usize, "{lines:?}");
        // The kernel picked exactly what the shared Maglev builder predicts.
        let table = maglev_table(&set.iter().map(|b| b.0).collect::<Vec<_>>());
        let want: Vec<String> = clients
            .iter()
            .map(|c| set[table[position(c)] as usize].1.to_string())
            .collect();
        assert_eq!(lines, want);
        lines
    };
    let before = run(&mut fx, &all);
    let spread: BTreeMap<&String, usize> = before.iter().fold(BTreeMap::new(), |mut m, b| {
        *m.entry(b).or_default() += 1;
        m
    });
    assert!(
        spread.len() >= 3,
        "32 clients on too few backends: {spread:?}"
    );
    // Remove the backend with the most clients.
    let (&gone, _) = spread.iter().max_by_key(|(_, c)| **c).unwrap();
    let gone = gone.clone();
    let rest: Vec<(SocketAddr, &str)> = all.iter().copied().filter(|b| b.1 != gone).collect();
    let after = run(&mut fx, &rest);
    let mut moved_other = 0;
    for (b, a) in before.iter().zip(&after) {
        if *b == gone {
            assert_ne!(*a, gone);
        } else if b != a {
            moved_other += 1;
        }
    }
    eprintln!("{moved_other} of the surviving backends' clients moved");
    // Which clients move is the table's doing (checked exactly above);
    // the table moves only the removed backend's positions plus a few
    // percent of the others (the paper's Fig. 12).
    let name_at = |set: &[(SocketAddr, &str)]| -> Vec<String> {
        maglev_table(&set.iter().map(|b| b.0).collect::<Vec<_>>())
            .into_iter()
            .map(|i| set[i as usize].1.to_string())
            .collect()
    };
    let (t0, t1) = (name_at(&all), name_at(&rest));
    let survivors = t0.iter().filter(|b| **b != gone).count();
    let changed = t0
        .iter()
        .zip(&t1)
        .filter(|(b, a)| **b != gone && b != a)
        .count();
    assert!(
        changed * 20 < survivors,
        "{changed} of {survivors} positions of surviving backends moved"
    );
}

fn sock_v4(s: &str) -> std::net::SocketAddrV4 {
    s.parse().unwrap()
}

#[test]
fn ipv6_services_survive_a_restart_and_follow_diffs() {
    use strait::datapath::{Datapath, DatapathConfig};
    use strait_config::snapshot::Changes;
    let Some(p) = privileged::require("ipv6_services_survive_a_restart_and_follow_diffs") else {
        return;
    };
    let b = [tcp_backend6("r0"), tcp_backend6("r1"), tcp_backend6("r2")];
    let vip = sock("[fd00:5719::6]:80");
    let host = "restart6.test.svc.cluster.local";
    let svc = |set: &[SocketAddr]| {
        let backends: Vec<_> = set.iter().map(|&a| (a, 1, true)).collect();
        service(
            host,
            vip,
            L4Protocol::Tcp,
            L4LoadBalancer::Random,
            &backends,
        )
    };
    let mut fx = Fixture::new(&p, "v6-restart", sock_v4(PROXY));
    fx.dp().apply(&[svc(&b)]).unwrap();
    let cg = fx.cg.path().to_path_buf();
    // P(a backend unseen in 60) = 3·(2/3)^60 ≈ 1e-10.
    let lines = probe(PROBE, Some(&cg), &["tcp", &vip.to_string(), "60"]);
    assert_eq!(tally(&lines).keys().collect::<Vec<_>>(), ["r0", "r1", "r2"]);

    // The daemon stops without cleaning up: pins and links stay, and the
    // IPv6 service keeps being balanced.
    drop(fx.dp.take());
    let lines = probe(PROBE, Some(&cg), &["tcp", &vip.to_string(), "60", "--peer"]);
    for l in &lines {
        assert!(l.starts_with(&format!("{vip} r")), "{l}");
    }

    // A new daemon recovers the IPv6 tables (service, set, counters) and
    // rewrites the service once.
    let mut config = DatapathConfig::new("v6-restart");
    config.bpffs = fx.bpffs.path().to_path_buf();
    config.outbound = sock_v4(PROXY);
    let mut dp = Datapath::new(&config).unwrap();
    dp.attach(&cg).unwrap();
    fx.dp = Some(dp);
    assert_eq!(fx.dp().service_count(), 1);
    assert_eq!(
        fx.dp().service_counters(vip, L4Protocol::Tcp).connections,
        120
    );
    let r = fx.dp().apply(&[svc(&b)]).unwrap();
    assert_eq!(r.updated, 1, "{r:?}");
    let e = fx.dp().kernel_entries();
    assert_eq!((e.services, e.backend_slots), (1, 3), "{e:?}");

    // A diff that drops r1: only that service is rewritten.
    let rest = [b[0], b[2]];
    let changes = Changes {
        changed: vec![(vip.ip(), vip.port(), L4Protocol::Tcp)],
        ..Changes::default()
    };
    let r = fx.dp().apply_changes(&[svc(&rest)], &changes).unwrap();
    assert_eq!(r.updated, 1, "{r:?}");
    let lines = probe(PROBE, Some(&cg), &["tcp", &vip.to_string(), "40"]);
    assert_eq!(tally(&lines).keys().collect::<Vec<_>>(), ["r0", "r2"]);
    assert_eq!(fx.dp().kernel_entries().backend_slots, 2);

    // A diff that removes it: connections are no longer rewritten.
    let changes = Changes {
        removed: vec![(vip.ip(), vip.port(), L4Protocol::Tcp)],
        ..Changes::default()
    };
    assert_eq!(fx.dp().apply_changes(&[], &changes).unwrap().removed, 1);
    assert_eq!(
        fx.dp().kernel_entries(),
        strait::datapath::KernelEntries::default()
    );
}
