//! Tier 2: the data path outlives its loader. A loader process pins maps and
//! links and exits; connections are still balanced; a new loader reuses the
//! pins (same maps, programs not attached twice) and can change them; and
//! cleanup detaches everything.
use std::net::SocketAddrV4;

use strait::datapath::{Datapath, DatapathConfig, L4LoadBalancer, L4Protocol};
use strait_tests::bpffs::TestBpffs;
use strait_tests::cgroup::TestCgroup;
use strait_tests::lb::{load_and_exit, probe, service, tally, tcp_backend};
use strait_tests::privileged;

const PROBE: &str = env!("CARGO_BIN_EXE_strait-probe");

#[test]
fn pinned_data_path_survives_its_loader_and_is_reused() {
    let Some(p) = privileged::require("pinned_data_path_survives_its_loader_and_is_reused") else {
        return;
    };
    let bpffs = TestBpffs::new().unwrap();
    let cg = TestCgroup::new(&p.cgroup2, "restart").unwrap();
    let b = [tcp_backend("k0"), tcp_backend("k1"), tcp_backend("k2")];
    let vip: SocketAddrV4 = "127.100.5.1:80".parse().unwrap();
    // A loader that exits, as a daemon that stops (it is not in the cgroup).
    load_and_exit(PROBE, bpffs.path(), "restart", cg.path(), vip, &b);

    // Loader gone: still balanced over all three.
    let lines = probe(PROBE, Some(cg.path()), &["tcp", &vip.to_string(), "60"]);
    assert_eq!(
        tally(&lines).keys().collect::<Vec<_>>(),
        ["k0", "k1", "k2"],
        "{lines:?}"
    );

    // A new loader finds the pinned service and its counters.
    let mut config = DatapathConfig::new("restart");
    config.bpffs = bpffs.path().to_path_buf();
    let mut dp = Datapath::new(&config).unwrap();
    assert_eq!(dp.service_count(), 1);
    assert_eq!(dp.service_counters(vip, L4Protocol::Tcp).connections, 60);
    dp.attach(cg.path()).unwrap();
    // The links now run this loader's programs (swapped in place, never
    // detached), over the same pinned maps: the kernel-balanced connection
    // counts of the first loader's programs are still there.
    assert_eq!(
        dp.stale_links().unwrap(),
        0,
        "an earlier program still runs"
    );
    let opened: u64 = dp.tcp_stats().unwrap().iter().map(|(_, s)| s.opened).sum();
    assert_eq!(opened, 60, "TCP_STATS kept across the restart");
    let r = dp
        .apply(&[service(
            vip,
            L4LoadBalancer::Random,
            &[(b[0], 1, true), (b[1], 1, true)],
        )])
        .unwrap();
    assert_eq!(r.updated, 1, "{r:?}");
    let lines = probe(PROBE, Some(cg.path()), &["tcp", &vip.to_string(), "40"]);
    assert_eq!(
        tally(&lines).keys().collect::<Vec<_>>(),
        ["k0", "k1"],
        "{lines:?}"
    );
    // Attached once: each connect was counted once.
    assert_eq!(dp.service_counters(vip, L4Protocol::Tcp).connections, 100);

    // Attaching to another pods cgroup moves the programs there.
    let moved = TestCgroup::new(&p.cgroup2, "restart-moved").unwrap();
    dp.attach(moved.path()).unwrap();
    let lines = probe(PROBE, Some(moved.path()), &["tcp", &vip.to_string(), "3"]);
    assert!(lines.iter().all(|l| l == "k0" || l == "k1"), "{lines:?}");
    assert_eq!(
        probe(PROBE, Some(cg.path()), &["tcp", &vip.to_string()]),
        ["error ConnectionRefused"],
        "still attached to the old cgroup"
    );

    // Cleanup detaches: the VIP is no longer rewritten.
    let pins = dp.pin_dir().to_path_buf();
    dp.cleanup().unwrap();
    assert!(!pins.exists());
    assert_eq!(
        probe(PROBE, Some(moved.path()), &["tcp", &vip.to_string()]),
        ["error ConnectionRefused"]
    );
}
