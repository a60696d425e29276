//! Upstream connection pool: keep-alive reuse, DestinationRule
//! `connectionPool.http.maxRequestsPerConnection` and `idleTimeout`, seen
//! the way an operator sees them: the upstream connection's local address
//! in the access log (`%UPSTREAM_LOCAL_ADDRESS%`).
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::client::Client;
use support::MeshBuilder;

async fn mesh(dr: &str) -> support::Mesh {
    let mut b = MeshBuilder::new();
    b.service("ratings", 9080, "http", &[("ratings-v1", &[])])
        .await;
    b.yaml(dr);
    b.start().await
}

fn dr(http: &str) -> String {
    support::yaml::http_pool_rule("ratings", http)
}

/// Sends `n` requests one after the other (each response read to the
/// end), `pause` apart, over `client`; returns the upstream connection
/// each one used, from the access log.
async fn upstream_conns(
    mesh: &support::Mesh,
    client: &Client,
    n: usize,
    pause: Duration,
) -> Vec<SocketAddr> {
    let url = mesh.url("ratings", "/");
    for i in 0..n {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        assert_eq!(client.get(&url, &[]).await.status, 200);
    }
    // Records are written when the response body ends.
    let mut logs = mesh.logs().await;
    for _ in 0..50 {
        if logs.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        logs = mesh.logs().await;
    }
    assert_eq!(logs.len(), n, "one access-log record per request");
    logs.iter()
        .map(|l| {
            l.upstream_local_address
                .expect("upstream local address logged")
        })
        .collect()
}

#[tokio::test]
async fn keep_alive_reuses_one_upstream_connection() {
    for client in [Client::http1(), Client::http2()] {
        let mesh = mesh(&dr("{}")).await;
        let conns = upstream_conns(&mesh, &client, 4, Duration::ZERO).await;
        assert!(conns.iter().all(|c| *c == conns[0]), "{conns:?}");
    }
}

#[tokio::test]
async fn max_requests_per_connection_retires_connections() {
    for client in [Client::http1(), Client::http2()] {
        let mesh = mesh(&dr("{maxRequestsPerConnection: 2}")).await;
        let c = upstream_conns(&mesh, &client, 5, Duration::ZERO).await;
        assert_eq!(c[0], c[1], "{c:?}");
        assert_ne!(c[1], c[2], "{c:?}");
        assert_eq!(c[2], c[3], "{c:?}");
        assert_ne!(c[3], c[4], "{c:?}");
        assert_ne!(c[0], c[4], "{c:?}");
    }
}

#[tokio::test]
async fn idle_timeout_closes_idle_upstream_connections() {
    for client in [Client::http1(), Client::http2()] {
        let mesh = mesh(&dr("{idleTimeout: 200ms}")).await;
        // Within the timeout the connection is reused; after an idle pause
        // of three times the timeout it has been closed and a new one is
        // dialed.
        let quick = upstream_conns(&mesh, &client, 2, Duration::from_millis(20)).await;
        assert_eq!(quick[0], quick[1], "{quick:?}");
        let url = mesh.url("ratings", "/");
        tokio::time::sleep(Duration::from_millis(600)).await;
        // Closed by the proxy while idle, not only skipped on next use.
        assert!(!established(quick[1]), "idle connection still open");
        assert_eq!(client.get(&url, &[]).await.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let logs = mesh.logs().await;
        let last = logs.last().and_then(|l| l.upstream_local_address);
        assert_ne!(last, Some(quick[1]), "idle connection was not closed");
    }
}

/// Whether a TCP connection with local address `local` is in state
/// ESTABLISHED (/proc/net/tcp, IPv4).
fn established(local: SocketAddr) -> bool {
    let SocketAddr::V4(v4) = local else {
        panic!("IPv4 expected: {local}")
    };
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").expect("reading /proc/net/tcp");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1] == want && f[3] == "01"
    })
}
