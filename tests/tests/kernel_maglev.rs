//! Tier 2: Maglev consistent hashing in `cgroup/connect4`. Each client is a
//! distinct bound source address (127.1.x.y), the identity the kernel
//! hashes (Istio's `consistentHash.useSourceIp`).
use std::net::SocketAddrV4;

use strait::datapath::L4LoadBalancer;
use strait_tests::lb::{assert_binomial, probe, service, tally, tcp_backend, Fixture};
use strait_tests::privileged;

const PROBE: &str = env!("CARGO_BIN_EXE_strait-probe");
const CLIENTS: usize = 1000;

#[test]
fn maglev_keeps_clients_and_moves_few_when_a_backend_goes() {
    let Some(p) = privileged::require("maglev_keeps_clients_and_moves_few_when_a_backend_goes")
    else {
        return;
    };
    let names: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let backends: Vec<(SocketAddrV4, u32, bool)> =
        names.iter().map(|n| (tcp_backend(n), 1, true)).collect();
    let vip: SocketAddrV4 = "127.100.1.1:80".parse().unwrap();
    let mut fx = Fixture::new(&p, "maglev", "127.0.0.1:1".parse().unwrap());
    fx.dp()
        .apply(&[service(vip, L4LoadBalancer::Maglev, &backends)])
        .unwrap();
    let cg = fx.cg.path().to_path_buf();
    let run = || {
        let n = CLIENTS.to_string();
        probe(
            PROBE,
            Some(&cg),
            &["tcp", &vip.to_string(), &n, "--bind-from", "127.1.0.1"],
        )
    };

    // Same client, same backend.
    let before = run();
    assert_eq!(before.len(), CLIENTS);
    assert_eq!(run(), before, "a client changed backend with no change");
    // And the clients spread over all ten (each ~ Binomial(1000, 1/10)).
    let seen = tally(&before);
    for n in &names {
        assert_binomial(n, seen.get(n).copied().unwrap_or(0), CLIENTS, 0.1);
    }

    // Remove m3: its clients move, almost no one else does.
    let removed = "m3";
    let rest: Vec<_> = backends
        .iter()
        .zip(&names)
        .filter(|(_, n)| n.as_str() != removed)
        .map(|(b, _)| *b)
        .collect();
    let r = fx
        .dp()
        .apply(&[service(vip, L4LoadBalancer::Maglev, &rest)])
        .unwrap();
    assert_eq!(r.updated, 1);
    let after = run();
    let mut moved = 0;
    let mut moved_others = 0;
    for (b, a) in before.iter().zip(&after) {
        assert!(
            names.contains(a) && a != removed,
            "client got {a:?} after removing {removed}"
        );
        if b != a {
            moved += 1;
            if b != removed {
                moved_others += 1;
            }
        }
    }
    let on_removed = seen.get(removed).copied().unwrap_or(0);
    eprintln!("maglev: {moved} of {CLIENTS} clients moved, {on_removed} of them from {removed}");
    assert_eq!(moved - moved_others, on_removed);
    assert!(moved < CLIENTS / 5, "{moved} of {CLIENTS} clients moved");
    // Maglev moves a few percent of the other entries (the paper's Fig. 12).
    assert!(
        moved_others < CLIENTS * 6 / 100,
        "{moved_others} clients of surviving backends moved"
    );
}
