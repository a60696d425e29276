//! The outbound listener at file-descriptor exhaustion (issue 14): accept
//! fails with EMFILE while connections wait in the backlog, so the
//! listener stays readable. The accept loop must back off instead of
//! spinning a core, and serve again once descriptors are free.
//!
//! Its own test binary: it lowers this process's RLIMIT_NOFILE.
mod support;

use std::time::{Duration, Instant};

use support::MeshBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn cpu_time() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid rusage to fill.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[tokio::test(flavor = "current_thread")]
async fn accept_backs_off_at_fd_exhaustion_and_recovers() {
    let mut b = MeshBuilder::new();
    b.service("ratings", 9080, "http", &[("ratings-v1", &[])])
        .await;
    let mesh = b.start().await;
    let front = mesh.fronts["ratings"];

    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on valid structs.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) };
    let low = libc::rlimit {
        rlim_cur: open_fds() + 60,
        rlim_max: old.rlim_max,
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);

    // Clients until this process has no descriptor left: the proxy's
    // accepts then fail while the rest wait in its backlog.
    let mut clients = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(front)).await {
            Ok(Ok(s)) => clients.push(s),
            Ok(Err(e)) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
            Err(_) => panic!("connect hung"),
        }
        assert!(clients.len() < 1000, "the limit was not reached");
    }
    // Exhausted for 2 s: the accept loop must sleep, not spin.
    let (cpu0, t0) = (cpu_time(), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_time() - cpu0;
    let wall = t0.elapsed();
    assert!(
        used < wall / 5,
        "{used:?} of CPU in {wall:?} while accept fails with EMFILE"
    );

    // Descriptors back: served again.
    drop(clients);
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) }, 0);
    let mut s = TcpStream::connect(front).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: ratings\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out))
        .await
        .expect("served after recovery")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
}
