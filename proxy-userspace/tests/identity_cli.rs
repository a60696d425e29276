//! `strait ca serve` as a process: a node fetches a certificate over TLS,
//! the CA restarts with the same --ca-dir and keeps its root, and neither
//! its debug log nor its monitoring endpoints show key material.
mod identity;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use identity::*;
use strait::identity::client::{CaClient, CaClientConfig, NodeToken};
use strait::identity::SpiffeId;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

struct CaProcess {
    child: Child,
    listen: SocketAddr,
    monitoring: SocketAddr,
}

impl CaProcess {
    fn start(dir: &TempDir, log: &std::path::Path) -> CaProcess {
        let (listen, monitoring) = (
            SocketAddr::from(([127, 0, 0, 1], free_port())),
            SocketAddr::from(([127, 0, 0, 1], free_port())),
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_strait"))
            .args(["ca", "serve", "--ca-dir"])
            .arg(dir.path().join("ca"))
            .arg("--tokens")
            .arg(dir.path().join("tokens"))
            .arg("--config")
            .arg(dir.path().join("config"))
            .args([
                "--listen",
                &listen.to_string(),
                "--monitoring",
                &monitoring.to_string(),
            ])
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(listen).is_err() {
            assert!(
                Instant::now() < deadline,
                "strait ca serve did not listen on {listen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        CaProcess {
            child,
            listen,
            monitoring,
        }
    }

    fn client(&self, dir: &TempDir) -> CaClient {
        CaClient::new(CaClientConfig {
            address: format!("https://{}", self.listen),
            root_pem: std::fs::read_to_string(dir.path().join("ca/root-cert.pem")).unwrap(),
            token: NodeToken::File(dir.path().join("node-a-token")),
            cluster_id: "Kubernetes".into(),
            ttl: Duration::from_secs(3600),
        })
        .unwrap()
    }

    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "strait ca serve exited with {status}");
    }
}

impl Drop for CaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_serve_restarts_with_the_same_root_and_logs_no_keys() {
    let dir = TempDir::new("cli");
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/pods.yaml"), default_pods()).unwrap();
    std::fs::write(
        dir.path().join("tokens"),
        format!("{TOKEN_A} node-a\n{TOKEN_B} node-b\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("node-a-token"), format!("{TOKEN_A}\n")).unwrap();
    let log = dir.path().join("ca.log");
    let id = SpiffeId::new("cluster.local", "default", "bookinfo-reviews");

    let ca = CaProcess::start(&dir, &log);
    let first = ca.client(&dir).fetch(&id).await.unwrap();
    let e = ca
        .client(&dir)
        .fetch(&SpiffeId::new(
            "cluster.local",
            "default",
            "bookinfo-productpage",
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("node node-a may not obtain"), "{e}");
    let metrics = get(ca.monitoring, "/metrics").unwrap();
    assert!(metrics.contains("citadel_server_csr_count 2"), "{metrics}");
    assert!(
        metrics.contains("citadel_server_success_cert_issuance_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("citadel_server_authentication_failure_count 1"),
        "{metrics}"
    );
    let dump = get(ca.monitoring, "/config_dump").unwrap();
    assert!(dump.contains("\"origin\": \"SelfSignedNew\""), "{dump}");
    assert!(dump.contains("\"node-a\": 2"), "{dump}");
    ca.stop();

    let ca = CaProcess::start(&dir, &log);
    let second = ca.client(&dir).fetch(&id).await.unwrap();
    assert_eq!(second.roots, first.roots, "the root survives the restart");
    let dump = get(ca.monitoring, "/config_dump").unwrap();
    assert!(
        dump.contains("\"origin\": \"SelfSignedPersisted\""),
        "{dump}"
    );
    let metrics = get(ca.monitoring, "/metrics").unwrap();
    ca.stop();

    let key = std::fs::read_to_string(dir.path().join("ca/ca-key.pem")).unwrap();
    let key_line = key.lines().nth(1).unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("CA: issued a workload certificate"),
        "{log_text}"
    );
    for (what, text) in [
        ("log", &log_text),
        ("/config_dump", &dump),
        ("/metrics", &metrics),
    ] {
        assert!(
            !text.contains("PRIVATE KEY"),
            "{what} shows a private key:\n{text}"
        );
        assert!(
            !text.contains(key_line),
            "{what} shows CA key bytes:\n{text}"
        );
    }
}
