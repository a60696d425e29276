//! Tier 2: the sockops `TCP_STATS` counters follow `DatapathConfig::tcp_stats`
//! (on by default; off only to measure their cost): with them off,
//! connections are still balanced but nothing is counted; on, each
//! connection is counted opened, and closed once it ends.
use std::net::SocketAddrV4;

use strait::datapath::{Datapath, DatapathConfig, L4LoadBalancer};
use strait_tests::bpffs::TestBpffs;
use strait_tests::cgroup::TestCgroup;
use strait_tests::lb::{probe, service, tally, tcp_backend};
use strait_tests::privileged;

const PROBE: &str = env!("CARGO_BIN_EXE_strait-probe");

/// Holds a data path with the counters `on`, sends 20 connections to a
/// two-backend VIP from a cgroup, and returns (opened, closed) counted.
fn counted(p: &privileged::Privileged, bpffs: &TestBpffs, on: bool) -> (u64, u64) {
    let name = if on { "tcpstats-on" } else { "tcpstats-off" };
    let cg = TestCgroup::new(&p.cgroup2, name).unwrap();
    let b = [tcp_backend("s0"), tcp_backend("s1")];
    let vip: SocketAddrV4 = if on {
        "127.100.6.1:80".parse().unwrap()
    } else {
        "127.100.6.2:80".parse().unwrap()
    };
    let mut config = DatapathConfig::new(name);
    config.bpffs = bpffs.path().to_path_buf();
    config.tcp_stats = on;
    let mut dp = Datapath::new(&config).unwrap();
    dp.attach(cg.path()).unwrap();
    dp.apply(&[service(
        vip,
        L4LoadBalancer::Random,
        &[(b[0], 1, true), (b[1], 1, true)],
    )])
    .unwrap();
    let lines = probe(PROBE, Some(cg.path()), &["tcp", &vip.to_string(), "20"]);
    assert_eq!(
        tally(&lines).values().sum::<usize>(),
        20,
        "balanced either way: {lines:?}"
    );
    // Closes are counted when the sockets reach TCP_CLOSE (the probe's
    // side closes first, so allow TIME_WAIT-free teardown a moment).
    let mut totals = (0, 0);
    for _ in 0..50 {
        let stats = dp.tcp_stats().unwrap();
        totals = (
            stats.iter().map(|(_, s)| s.opened).sum(),
            stats.iter().map(|(_, s)| s.closed).sum(),
        );
        if !on || totals.1 >= 20 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    dp.cleanup().unwrap();
    totals
}

#[test]
fn tcp_stats_counters_follow_the_load_time_switch() {
    let Some(p) = privileged::require("tcp_stats_counters_follow_the_load_time_switch") else {
        return;
    };
    let bpffs = TestBpffs::new().unwrap();
    assert_eq!(counted(&p, &bpffs, false), (0, 0), "counters off");
    let (opened, closed) = counted(&p, &bpffs, true);
    assert_eq!(opened, 20, "counters on: every connection counted opened");
    assert!(closed >= 20, "counters on: {closed} of 20 counted closed");
}
