//! Tier 2: a snapshot diff's kernel part is applied alone (issue 21): the
//! services it names are rewritten or deleted and no other service is
//! touched (their counters and backends stay), through real sockets in a
//! real cgroup.
use std::net::SocketAddrV4;

use strait::datapath::{Datapath, DatapathConfig, L4LoadBalancer, L4Protocol};
use strait_config::snapshot::Changes;
use strait_tests::bpffs::TestBpffs;
use strait_tests::cgroup::TestCgroup;
use strait_tests::lb::{probe, service, tally, tcp_backend};
use strait_tests::privileged;

const PROBE: &str = env!("CARGO_BIN_EXE_strait-probe");

#[test]
fn diff_rewrites_only_the_services_it_names() {
    let Some(p) = privileged::require("diff_rewrites_only_the_services_it_names") else {
        return;
    };
    let bpffs = TestBpffs::new().unwrap();
    let cg = TestCgroup::new(&p.cgroup2, "incremental").unwrap();
    let b = [tcp_backend("i0"), tcp_backend("i1"), tcp_backend("i2")];
    let vip_a: SocketAddrV4 = "127.100.6.1:80".parse().unwrap();
    let vip_b: SocketAddrV4 = "127.100.6.2:80".parse().unwrap();
    let mut config = DatapathConfig::new("incremental");
    config.bpffs = bpffs.path().to_path_buf();
    let mut dp = Datapath::new(&config).unwrap();
    dp.attach(cg.path()).unwrap();
    let a1 = service(
        vip_a,
        L4LoadBalancer::Random,
        &[(b[0], 1, true), (b[1], 1, true)],
    );
    let b1 = service(vip_b, L4LoadBalancer::Random, &[(b[2], 1, true)]);
    dp.apply(&[a1, b1.clone()]).unwrap();
    let lines = probe(PROBE, Some(cg.path()), &["tcp", &vip_b.to_string(), "5"]);
    assert_eq!(tally(&lines).keys().collect::<Vec<_>>(), ["i2"]);

    // A's endpoint i1 removed: only A is named by the diff.
    let a2 = service(vip_a, L4LoadBalancer::Random, &[(b[0], 1, true)]);
    let key = |v: SocketAddrV4| ((*v.ip()).into(), v.port(), L4Protocol::Tcp);
    let changes = Changes {
        added: vec![],
        removed: vec![],
        changed: vec![key(vip_a)],
    };
    let r = dp
        .apply_changes(&[a2.clone(), b1.clone()], &changes)
        .unwrap();
    assert_eq!(
        (r.updated, r.added, r.removed, r.unchanged),
        (1, 0, 0, 0),
        "{r:?}"
    );
    let lines = probe(PROBE, Some(cg.path()), &["tcp", &vip_a.to_string(), "20"]);
    assert_eq!(
        tally(&lines).keys().collect::<Vec<_>>(),
        ["i0"],
        "{lines:?}"
    );
    // B untouched: same backends, its counters carry on.
    let lines = probe(PROBE, Some(cg.path()), &["tcp", &vip_b.to_string(), "5"]);
    assert_eq!(tally(&lines).keys().collect::<Vec<_>>(), ["i2"]);
    assert_eq!(dp.service_counters(vip_b, L4Protocol::Tcp).connections, 10);

    // B removed by the diff; A stays.
    let changes = Changes {
        added: vec![],
        removed: vec![key(vip_b)],
        changed: vec![],
    };
    let r = dp.apply_changes(&[a2], &changes).unwrap();
    assert_eq!(r.removed, 1, "{r:?}");
    assert_eq!(dp.service_count(), 1);
    assert_eq!(
        probe(PROBE, Some(cg.path()), &["tcp", &vip_b.to_string()]),
        ["error ConnectionRefused"]
    );
    let lines = probe(PROBE, Some(cg.path()), &["tcp", &vip_a.to_string(), "3"]);
    assert_eq!(tally(&lines).keys().collect::<Vec<_>>(), ["i0"]);
    dp.cleanup().unwrap();
}
