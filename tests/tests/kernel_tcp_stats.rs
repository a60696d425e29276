//! Tier 2: what `TCP_STATS` / `TCP_STATS6` count for a kernel-balanced
//! connection — opened once when it is established, closed once with the
//! exact bytes the client wrote and received (when the client releases
//! the socket, `cgroup/sock_release`; on kernels without its kfuncs the
//! sockops program's state callback, at the first state where both are
//! final) — whoever closes
//! first, after a half-close, with data still unacknowledged at close, and
//! for native IPv6 services. Real sockets from `strait-probe` in a test
//! cgroup, backends on loopback.
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};

use strait::datapath::{
    Datapath, DatapathConfig, L4Backend, L4LoadBalancer, L4Mode, L4Protocol, L4Service, TcpStats,
};
use strait_tests::bpffs::TestBpffs;
use strait_tests::cgroup::TestCgroup;
use strait_tests::lb::probe;
use strait_tests::privileged;

const PROBE: &str = env!("CARGO_BIN_EXE_strait-probe");

/// How the backend ends a connection.
#[derive(Clone, Copy)]
enum Close {
    /// Right after its reply.
    AfterReply,
    /// Once the client has closed.
    AfterClient,
    /// Right after its reply, with a reset (`SO_LINGER` 0).
    Reset,
}

/// A backend on `bind` that reads `expect` bytes, writes `reply` bytes and
/// closes as `close` says, for every connection.
fn backend(bind: &str, expect: usize, reply: usize, close: Close) -> SocketAddr {
    let l = TcpListener::bind(bind).expect("bind backend");
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = vec![0u8; expect];
            if s.read_exact(&mut buf).is_err() {
                continue;
            }
            let _ = s.write_all(&vec![b'y'; reply]);
            match close {
                Close::AfterClient => {
                    let _ = std::io::copy(&mut s, &mut std::io::sink());
                }
                Close::Reset => set_linger0(&s),
                Close::AfterReply => {}
            }
        }
    });
    addr
}

/// `SO_LINGER` 0 on `s`: closing it sends a reset.
fn set_linger0(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a `linger` of its size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            std::mem::size_of_val(&l) as libc::socklen_t,
        )
    };
}

fn l4(vip: SocketAddr, backend: SocketAddr) -> L4Service {
    L4Service {
        host: format!("svc-{}.test.svc.cluster.local", vip.port()),
        vip: vip.ip(),
        port: vip.port(),
        protocol: L4Protocol::Tcp,
        mode: L4Mode::L4,
        load_balancer: L4LoadBalancer::Random,
        backends: vec![L4Backend {
            addr: backend,
            weight: 1,
            healthy: true,
        }],
    }
}

/// Runs `strait-probe xfer` from `cg` and checks what it received.
fn xfer(cg: &TestCgroup, vip: SocketAddr, send: usize, recv: &str, want: usize) {
    let lines = probe(
        PROBE,
        Some(cg.path()),
        &["xfer", &vip.to_string(), &send.to_string(), recv],
    );
    assert_eq!(lines, [format!("received {want}")], "xfer to {vip}");
}

/// (send, reply, how the backend closes, how the client reads).
const CASES: [(usize, usize, Close, &str); 5] = [
    // The server closes first: the client closes its socket in
    // CLOSE_WAIT (counted at LAST_ACK), the server's FIN received (not a
    // byte).
    (1000, 5000, Close::AfterReply, "eof"),
    // The client closes first, in ESTABLISHED, after a reply larger than
    // the initial receive window.
    (300, 70_000, Close::AfterClient, "70000"),
    // A large upload closed at once: part of it is still unacknowledged
    // when the client closes, and counted as written.
    (300_000, 0, Close::AfterClient, "0"),
    // A half-close: the client shuts its side down, then reads the reply
    // until the server closes (counted at CLOSING or TCP_CLOSE, not at
    // FIN_WAIT1, where the reply was still to come).
    (2000, 30_000, Close::AfterClient, "shut"),
    // The server resets the connection after its reply: the client reads
    // the reply and closes a socket in TCP_CLOSE that sent no FIN and
    // received none.
    (500, 3000, Close::Reset, "3000"),
];

fn datapath(p: &privileged::Privileged, bpffs: &TestBpffs, name: &str) -> (Datapath, TestCgroup) {
    datapath_with(p, bpffs, name, true)
}

/// [`datapath`], closes counted at release (`release`, where the kernel
/// allows) or by the sockops state callback.
fn datapath_with(
    p: &privileged::Privileged,
    bpffs: &TestBpffs,
    name: &str,
    release: bool,
) -> (Datapath, TestCgroup) {
    let cg = TestCgroup::new(&p.cgroup2, name).unwrap();
    let mut config = DatapathConfig::new(name);
    config.bpffs = bpffs.path().to_path_buf();
    config.tcp_stats_release = release;
    let mut dp = Datapath::new(&config).unwrap();
    dp.attach(cg.path()).unwrap();
    (dp, cg)
}

fn exact(sent: usize, received: usize) -> TcpStats {
    TcpStats {
        opened: 1,
        closed: 1,
        sent: sent as u64,
        received: received as u64,
    }
}

#[test]
fn balanced_connections_are_counted_with_their_exact_bytes() {
    let Some(p) = privileged::require("balanced_connections_are_counted_with_their_exact_bytes")
    else {
        return;
    };
    exact_bytes(&p, true);
}

#[test]
fn the_state_callback_counts_the_same_exact_bytes() {
    let Some(p) = privileged::require("the_state_callback_counts_the_same_exact_bytes") else {
        return;
    };
    exact_bytes(&p, false);
}

/// Every case of [`CASES`] through an IPv4 VIP, closes counted at release
/// (`release`, where the kernel allows) or by the state callback.
fn exact_bytes(p: &privileged::Privileged, release: bool) {
    let bpffs = TestBpffs::new().unwrap();
    let name = if release {
        "tcpstats-bytes"
    } else {
        "tcpstats-bytes-cb"
    };
    let (mut dp, cg) = datapath_with(p, &bpffs, name, release);
    let mut services = Vec::new();
    let mut want = Vec::new();
    for (i, (send, reply, close, _)) in CASES.iter().enumerate() {
        let b = backend("127.0.0.1:0", *send, *reply, *close);
        let vip: SocketAddr = format!("127.100.7.{}:80", i + 1).parse().unwrap();
        services.push(l4(vip, b));
        want.push((vip, b, exact(*send, *reply)));
    }
    dp.apply(&services).unwrap();
    for (i, (send, reply, _, recv)) in CASES.iter().enumerate() {
        xfer(&cg, want[i].0, *send, recv, *reply);
    }
    // The probe has exited: every socket was closed.
    let stats = dp.tcp_stats().unwrap();
    for (vip, backend, counts) in &want {
        let found: Vec<_> = stats
            .iter()
            .filter(|(k, _)| {
                u32::from_be(k.vip)
                    == u32::from(match vip.ip() {
                        IpAddr::V4(a) => a,
                        IpAddr::V6(_) => unreachable!(),
                    })
                    && u16::from_be(k.vport) == vip.port()
            })
            .collect();
        assert_eq!(found.len(), 1, "one key for {vip}: {stats:?}");
        let (k, s) = found[0];
        assert_eq!(u16::from_be(k.bport), backend.port(), "{k:?}");
        assert_eq!(u32::from_be(k.src), u32::from_be_bytes([127, 0, 0, 1]));
        assert_eq!(s, counts, "{vip}");
    }
    // Unbalanced connections (to a backend directly) are not counted.
    xfer(&cg, want[0].1, CASES[0].0, "eof", CASES[0].1);
    assert_eq!(dp.tcp_stats().unwrap().len(), want.len());
    dp.cleanup().unwrap();
}

/// The IPv4 `TCP_STATS` counts of `vip` (one key expected).
fn counts_of(dp: &Datapath, vip: SocketAddr) -> TcpStats {
    let IpAddr::V4(ip) = vip.ip() else {
        unreachable!()
    };
    let stats = dp.tcp_stats().unwrap();
    let found: Vec<_> = stats
        .iter()
        .filter(|(k, _)| {
            u32::from_be(k.vip) == u32::from(ip) && u16::from_be(k.vport) == vip.port()
        })
        .collect();
    assert_eq!(found.len(), 1, "one key for {vip}: {stats:?}");
    found[0].1
}

/// A backend on loopback that accepts, reads nothing, and resets every
/// connection (`SO_LINGER` 0) after `after`.
fn resetting_backend(after: std::time::Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                std::thread::sleep(after);
                set_linger0(&s);
                drop(s);
            });
        }
    });
    addr
}

#[test]
fn a_reset_with_unsent_data_and_a_queued_fin_counts_exactly_the_bytes_written() {
    let Some(p) = privileged::require(
        "a_reset_with_unsent_data_and_a_queued_fin_counts_exactly_the_bytes_written",
    ) else {
        return;
    };
    for release in [true, false] {
        let bpffs = TestBpffs::new().unwrap();
        let name = if release {
            "tcpstats-rst"
        } else {
            "tcpstats-rst-cb"
        };
        let (mut dp, cg) = datapath_with(&p, &bpffs, name, release);
        // The server reads nothing: the client's last data stays unsent
        // (zero window), with its FIN queued behind it (`--shut`) or not,
        // when the reset comes.
        let b = resetting_backend(std::time::Duration::from_millis(400));
        let vips: [SocketAddr; 2] = [
            "127.100.9.1:80".parse().unwrap(),
            "127.100.9.2:80".parse().unwrap(),
        ];
        dp.apply(&[l4(vips[0], b), l4(vips[1], b)]).unwrap();
        for (vip, shut) in [(vips[0], true), (vips[1], false)] {
            let mut args = vec!["stuck".to_string(), vip.to_string()];
            if shut {
                args.push("--shut".into());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let lines = probe(PROBE, Some(cg.path()), &args);
            let written: u64 = lines
                .first()
                .and_then(|l| l.strip_prefix("written "))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("stuck {vip}: {lines:?}"));
            assert!(written > 0);
            assert_eq!(
                counts_of(&dp, vip),
                TcpStats {
                    opened: 1,
                    closed: 1,
                    sent: written,
                    received: 0,
                },
                "{vip}, FIN queued: {shut}, closes counted at release: {release}"
            );
        }
        dp.cleanup().unwrap();
    }
}

#[test]
fn a_socket_disconnected_and_connected_again_counts_one_close_per_open() {
    let Some(p) =
        privileged::require("a_socket_disconnected_and_connected_again_counts_one_close_per_open")
    else {
        return;
    };
    for release in [true, false] {
        let bpffs = TestBpffs::new().unwrap();
        let name = if release {
            "tcpstats-disc"
        } else {
            "tcpstats-disc-cb"
        };
        let (mut dp, cg) = datapath_with(&p, &bpffs, name, release);
        let b: Vec<SocketAddr> = [(100, 200), (300, 400), (500, 600)]
            .iter()
            .map(|(e, r)| backend("127.0.0.1:0", *e, *r, Close::AfterClient))
            .collect();
        // Not a service: a connection straight to it is not balanced.
        let elsewhere = backend("127.0.0.1:0", 300, 400, Close::AfterClient);
        let vip = |i: usize| -> SocketAddr { format!("127.100.10.{}:80", i + 1).parse().unwrap() };
        dp.apply(&(0..3).map(|i| l4(vip(i), b[i])).collect::<Vec<_>>())
            .unwrap();
        let run = |args: &[&str], want: usize| {
            let lines = probe(PROBE, Some(cg.path()), args);
            assert_eq!(lines.len(), want, "{args:?}: {lines:?}");
        };
        let (v0, v1, v2, other) = (
            vip(0).to_string(),
            vip(1).to_string(),
            vip(2).to_string(),
            elsewhere.to_string(),
        );
        // The same socket through the same VIP again; through a VIP, then
        // straight to a server that is no service's backend; disconnected
        // and closed.
        run(&["reconnect", &v0, "100", "200", &v0, "100", "200"], 2);
        run(&["reconnect", &v1, "300", "400", &other, "300", "400"], 2);
        run(&["reconnect", &v2, "500", "600"], 1);
        // Every connection through a VIP is counted opened and closed once.
        // The state callback counts a disconnected one with its bytes (at
        // its `TCP_CLOSE`, before `tcp_disconnect` zeroes them); the release
        // counter without (nothing runs at a disconnect that could read
        // them) — documented in tcp_release.rs.
        let c = |opened, sent, received| TcpStats {
            opened,
            closed: opened,
            sent,
            received,
        };
        let want = if release {
            [c(2, 100, 200), c(1, 0, 0), c(1, 0, 0)]
        } else {
            [c(2, 200, 400), c(1, 300, 400), c(1, 500, 600)]
        };
        for (i, w) in want.iter().enumerate() {
            assert_eq!(counts_of(&dp, vip(i)), *w, "{}, release: {release}", vip(i));
        }
        // The connection straight to the other server is not counted.
        assert_eq!(dp.tcp_stats().unwrap().len(), 3);
        dp.cleanup().unwrap();
    }
}

/// An IPv6 socket to the IPv4-mapped form of an IPv4 VIP is balanced by
/// connect6 over the IPv4 maps and counted under the IPv4 key, its peer
/// (the backend) matching its record.
#[test]
fn an_ipv4_mapped_connection_is_counted_under_its_ipv4_key() {
    let Some(p) = privileged::require("an_ipv4_mapped_connection_is_counted_under_its_ipv4_key")
    else {
        return;
    };
    let bpffs = TestBpffs::new().unwrap();
    let (mut dp, cg) = datapath(&p, &bpffs, "tcpstats-mapped");
    let b = backend("127.0.0.1:0", 700, 800, Close::AfterClient);
    let vip: SocketAddr = "127.100.11.1:80".parse().unwrap();
    dp.apply(&[l4(vip, b)]).unwrap();
    let mapped: SocketAddr = "[::ffff:127.100.11.1]:80".parse().unwrap();
    xfer(&cg, mapped, 700, "800", 800);
    xfer(&cg, mapped, 700, "800", 800);
    assert_eq!(
        counts_of(&dp, vip),
        TcpStats {
            opened: 2,
            closed: 2,
            sent: 1400,
            received: 1600,
        }
    );
    dp.cleanup().unwrap();
}

#[test]
fn native_ipv6_balanced_connections_are_counted() {
    let Some(p) = privileged::require("native_ipv6_balanced_connections_are_counted") else {
        return;
    };
    let bpffs = TestBpffs::new().unwrap();
    let (mut dp, cg) = datapath(&p, &bpffs, "tcpstats-v6");
    let mut services = Vec::new();
    let mut want = Vec::new();
    for (i, (send, reply, close, _)) in CASES.iter().enumerate() {
        let b = backend("[::1]:0", *send, *reply, *close);
        // fd00:5719::/64: nothing on the host holds it, so only a
        // rewritten connection reaches a backend.
        let vip: SocketAddr = format!("[fd00:5719::7:{}]:80", i + 1).parse().unwrap();
        services.push(l4(vip, b));
        want.push((vip, b, exact(*send, *reply)));
    }
    dp.apply(&services).unwrap();
    for (i, (send, reply, _, recv)) in CASES.iter().enumerate() {
        xfer(&cg, want[i].0, *send, recv, *reply);
    }
    let stats = dp.tcp_stats6().unwrap();
    assert_eq!(stats.len(), want.len(), "{stats:?}");
    let words = |a: IpAddr| match a {
        IpAddr::V6(a) => proxy_common::ipv6_words(a.octets()),
        IpAddr::V4(_) => unreachable!(),
    };
    for (vip, backend, counts) in &want {
        let (k, s) = stats
            .iter()
            .find(|(k, _)| k.vip == words(vip.ip()) && u16::from_be(k.vport) == vip.port())
            .unwrap_or_else(|| panic!("no key for {vip}: {stats:?}"));
        assert_eq!(k.backend, words(backend.ip()), "{k:?}");
        assert_eq!(u16::from_be(k.bport), backend.port(), "{k:?}");
        assert_eq!(k.src, words("::1".parse().unwrap()));
        assert_eq!(s, counts, "{vip}");
    }
    // Nothing went to the IPv4 map.
    assert!(dp.tcp_stats().unwrap().is_empty());
    dp.cleanup().unwrap();
}

/// Program `name`'s runs so far (counted while `BPF_ENABLE_STATS` is
/// held); `None` when it is not loaded.
fn runs(dp: &Datapath, name: &str) -> Option<u64> {
    dp.program_stats()
        .iter()
        .find(|(n, ..)| n == name)
        .map(|(_, runs, _)| *runs)
}

#[test]
fn a_balanced_connection_costs_one_release_run_and_no_state_callback() {
    let Some(p) =
        privileged::require("a_balanced_connection_costs_one_release_run_and_no_state_callback")
    else {
        return;
    };
    use strait::datapath::programs::{SOCKOPS, TCP_STATS_RELEASE};
    let bpffs = TestBpffs::new().unwrap();
    let (mut dp, cg) = datapath(&p, &bpffs, "tcpstats-runs");
    let b = backend("127.0.0.1:0", 100, 200, Close::AfterClient);
    let vip: SocketAddr = "127.100.7.9:80".parse().unwrap();
    dp.apply(&[l4(vip, b)]).unwrap();
    // Direct connections (not balanced) give the runs the kernel makes
    // without being asked. Balanced ones, closes counted at release (the
    // kernel has the kfuncs): the same sockops runs, and the release
    // program runs once per socket either way. Counted by the state
    // callback (an older kernel): one sockops run more each, turned off
    // where the connection is counted closed (FIN_WAIT1).
    const N: u64 = 10;
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).unwrap();
    let sockops = |dp: &Datapath| runs(dp, SOCKOPS).unwrap();
    let release = |dp: &Datapath| runs(dp, TCP_STATS_RELEASE);
    let (before, release_before) = (sockops(&dp), release(&dp));
    for _ in 0..N {
        xfer(&cg, b, 100, "200", 200);
    }
    let (direct, release_direct) = (sockops(&dp) - before, release(&dp));
    for _ in 0..N {
        xfer(&cg, vip, 100, "200", 200);
    }
    let balanced = sockops(&dp) - before - direct;
    assert!(direct >= 3 * N, "{direct} runs for {N} direct connections");
    match (release_before, release_direct, release(&dp)) {
        (Some(r0), Some(r1), Some(r2)) => {
            assert_eq!(
                balanced, direct,
                "sockops runs for {N} balanced connections"
            );
            assert_eq!(r1 - r0, N, "release runs for {N} direct connections");
            assert_eq!(r2 - r1, N, "release runs for {N} balanced connections");
        }
        _ => {
            eprintln!("no release counter on this kernel: closes counted by the state callback");
            assert_eq!(balanced, direct + N, "runs for {N} balanced connections");
        }
    }
    let stats = dp.tcp_stats().unwrap();
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!(
        stats[0].1,
        TcpStats {
            opened: N,
            closed: N,
            sent: 100 * N,
            received: 200 * N,
        }
    );
    dp.cleanup().unwrap();
}

/// The test thread (and every process and thread it starts from now on)
/// runs on CPU 0 only.
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t with bit 0 set; pid 0 is this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The `TCP_STATS` key of a client on 127.0.0.1 through `vip` (port 80) to
/// `backend`, as the sockops program builds it.
fn key4(vip: std::net::Ipv4Addr, backend: SocketAddr) -> proxy_common::TcpStatsKey {
    let lo = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    proxy_common::TcpStatsKey {
        src: lo,
        vip: u32::from(vip).to_be(),
        backend: lo,
        vport: 80u16.to_be(),
        bport: backend.port().to_be(),
    }
}

#[test]
fn a_key_whose_direct_slot_is_taken_is_counted_in_the_hash() {
    let Some(p) = privileged::require("a_key_whose_direct_slot_is_taken_is_counted_in_the_hash")
    else {
        return;
    };
    // Both services' connections on one CPU, so the second key finds the
    // first one in its TCP_STATS_DIRECT slot on that CPU.
    pin_to_cpu0();
    let bpffs = TestBpffs::new().unwrap();
    let (mut dp, cg) = datapath(&p, &bpffs, "tcpstats-slot");
    let b = backend("127.0.0.1:0", 400, 900, Close::AfterReply);
    let first = std::net::Ipv4Addr::new(127, 100, 8, 1);
    let slot = proxy_common::tcp_stats_slot(&key4(first, b));
    let second = (1..=u32::from(u16::MAX))
        .map(|i| std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 101, 0, 0)) + i))
        .find(|v| proxy_common::tcp_stats_slot(&key4(*v, b)) == slot)
        .expect("a VIP whose key shares the slot");
    let vips: [SocketAddr; 2] = [
        SocketAddr::new(first.into(), 80),
        SocketAddr::new(second.into(), 80),
    ];
    dp.apply(&[l4(vips[0], b), l4(vips[1], b)]).unwrap();
    for vip in vips {
        for _ in 0..3 {
            xfer(&cg, vip, 400, "eof", 900);
        }
    }
    // Each key counted exactly, whichever map holds it.
    let stats = dp.tcp_stats().unwrap();
    assert_eq!(stats.len(), 2, "{stats:?}");
    for vip in [first, second] {
        let (_, s) = stats
            .iter()
            .find(|(k, _)| *k == key4(vip, b))
            .unwrap_or_else(|| panic!("no key for {vip}: {stats:?}"));
        assert_eq!(
            *s,
            TcpStats {
                opened: 3,
                closed: 3,
                sent: 1200,
                received: 2700,
            },
            "{vip}"
        );
    }
    // And the second one went to the hash: its slot was the first's.
    let pin = bpffs
        .path()
        .join("strait/tcpstats-slot")
        .join(proxy_common::TCP_STATS);
    let hashed: aya::maps::PerCpuHashMap<_, proxy_common::TcpStatsKey, TcpStats> =
        aya::maps::PerCpuHashMap::try_from(aya::maps::Map::PerCpuHashMap(
            aya::maps::MapData::from_pin(&pin).unwrap(),
        ))
        .unwrap();
    let keys: Vec<_> = hashed.keys().map(Result::unwrap).collect();
    assert_eq!(keys, [key4(second, b)]);
    dp.cleanup().unwrap();
}

/// The counter read (one `BPF_MAP_LOOKUP_BATCH` over `TCP_STATS_DIRECT`)
/// returns every taken slot of every CPU with its own counts — first,
/// middle and last slot, a different key per CPU, free slots left out —
/// and sums a key that several CPUs hold.
#[test]
fn the_counter_read_returns_every_taken_slot_of_every_cpu() {
    let Some(p) = privileged::require("the_counter_read_returns_every_taken_slot_of_every_cpu")
    else {
        return;
    };
    let bpffs = TestBpffs::new().unwrap();
    let (dp, _cg) = datapath(&p, &bpffs, "tcpstats-batch");
    let pin = bpffs
        .path()
        .join("strait/tcpstats-batch")
        .join(proxy_common::TCP_STATS_DIRECT);
    let mut direct: aya::maps::PerCpuArray<_, proxy_common::TcpStatsEntry> =
        aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(
            aya::maps::MapData::from_pin(&pin).unwrap(),
        ))
        .unwrap();
    let cpus = aya::util::nr_cpus().unwrap();
    let key = |n: u32| proxy_common::TcpStatsKey {
        src: u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1)).to_be(),
        vip: n.to_be(),
        backend: 7u32.to_be(),
        vport: 80u16.to_be(),
        bport: 8080u16.to_be(),
    };
    let counts = |n: u64| TcpStats {
        opened: n,
        closed: n,
        sent: 1000 * n,
        received: 7 * n,
    };
    let last = proxy_common::TCP_STATS_DIRECT_SLOTS - 1;
    let mut want: std::collections::BTreeMap<proxy_common::TcpStatsKey, TcpStats> =
        Default::default();
    for slot in [0, 1, 500, last] {
        let values: Vec<_> = (0..cpus)
            .map(|cpu| {
                // Slot 1: the same key on every CPU (summed); slot 500: CPU 0
                // only (the others free); else a key per CPU.
                let (k, free) = match slot {
                    1 => (key(1), false),
                    500 => (key(500), cpu != 0),
                    _ => (key(slot * 100 + cpu as u32 + 2), false),
                };
                let c = counts(u64::from(slot) + cpu as u64 + 1);
                if !free {
                    let e = want.entry(k).or_default();
                    e.opened += c.opened;
                    e.closed += c.closed;
                    e.sent += c.sent;
                    e.received += c.received;
                }
                proxy_common::TcpStatsEntry {
                    key: if free {
                        proxy_common::TcpStatsKey::default()
                    } else {
                        k
                    },
                    stats: if free { TcpStats::default() } else { c },
                }
            })
            .collect();
        direct
            .set(slot, aya::maps::PerCpuValues::try_from(values).unwrap(), 0)
            .unwrap();
    }
    let got = dp.tcp_stats().unwrap();
    assert_eq!(got, want.into_iter().collect::<Vec<_>>());
    dp.cleanup().unwrap();
}
