//! A bulk transfer with a checked byte pattern, for the same-node redirect
//! test (node_sockmap): both ends run as processes in pods (their
//! namespace and cgroup, so the daemon's socket programs see them).
//!
//! ```text
//! pattern-xfer sink ADDR REPLY [--slow]
//!     Listens on ADDR, prints `ready`, accepts one connection, reads until
//!     the client half-closes (with --slow: 16 KiB per read, 1 ms apart),
//!     checking the pattern, then writes REPLY pattern bytes and closes.
//!     Prints `received <N> <ok|bad@OFFSET> tcp_received <R>` (R: the
//!     socket's TCP_INFO `tcpi_bytes_received`).
//! pattern-xfer send ADDR SEND
//!     Connects, writes SEND pattern bytes, half-closes, reads until the
//!     server closes, checking the pattern. Prints
//!     `received <N> <ok|bad@OFFSET> tcp_acked <A> tcp_received <R>`
//!     (TCP_INFO `tcpi_bytes_acked` / `tcpi_bytes_received`: the bytes
//!     that went through the TCP stack; a redirected pair moves its data
//!     without it).
//! ```
//! Reads that fail with EAGAIN (a blocking `recv()` on a socket in a
//! sockmap can, when woken with nothing queued) wait with poll(2) and
//! retry, as a non-blocking reader does; 60 s at most.
//!
//! The pattern: byte `i` of a stream is `i % 251` (a prime, so a chunk
//! delivered out of order or twice shows at its first byte).
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

fn byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// Reads `s` to its end; (bytes, first bad offset).
fn read_checked(s: &mut TcpStream, slow: bool) -> std::io::Result<(u64, Option<u64>)> {
    let mut buf = vec![0u8; if slow { 16 * 1024 } else { 256 * 1024 }];
    let (mut n, mut bad) = (0u64, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = match s.read(&mut buf) {
            Ok(n) => n,
            // A blocking recv() on a socket in a sockmap can return EAGAIN
            // when woken with nothing queued (tcp_bpf_recvmsg); wait for
            // data as a non-blocking reader would.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    return Err(e);
                }
                wait_readable(s);
                continue;
            }
            Err(e) => return Err(e),
        };
        if got == 0 {
            return Ok((n, bad));
        }
        if bad.is_none() {
            if let Some(k) = (0..got).find(|k| buf[*k] != byte(n + *k as u64)) {
                bad = Some(n + k as u64);
            }
        }
        n += got as u64;
        if slow {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// poll(2) for input on `s`, 1 s at most.
fn wait_readable(s: &TcpStream) {
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 1000) };
}

fn write_pattern(s: &mut TcpStream, len: u64) -> std::io::Result<()> {
    let chunk: Vec<u8> = (0..251u64 * 256).map(byte).collect();
    let mut left = len;
    while left > 0 {
        // Chunks are a multiple of 251 long, so each starts at phase 0.
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// `tcpi_bytes_acked` and `tcpi_bytes_received` of `s`.
fn tcp_bytes(s: &TcpStream) -> (u64, u64) {
    // SAFETY: getsockopt fills at most `len` bytes of a zeroed tcp_info.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let r = libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        if r != 0 {
            return (u64::MAX, u64::MAX);
        }
        (info.tcpi_bytes_acked, info.tcpi_bytes_received)
    }
}

fn verdict(bad: Option<u64>) -> String {
    bad.map_or("ok".to_string(), |b| format!("bad@{b}"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr: SocketAddr = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: pattern-xfer sink|send ADDR N [--slow]");
    let n: u64 = args.get(2).and_then(|a| a.parse().ok()).expect("N");
    let result = match args[0].as_str() {
        "sink" => sink(addr, n, args.iter().any(|a| a == "--slow")),
        "send" => send(addr, n),
        _ => panic!("usage: pattern-xfer sink|send ADDR N [--slow]"),
    };
    if let Err(e) = result {
        eprintln!("pattern-xfer: {e}");
        std::process::exit(1);
    }
}

fn sink(addr: SocketAddr, reply: u64, slow: bool) -> std::io::Result<()> {
    let l = TcpListener::bind(addr)?;
    println!("ready");
    std::io::stdout().flush()?;
    let (mut s, _) = l.accept()?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let (got, bad) = read_checked(&mut s, slow)?;
    write_pattern(&mut s, reply)?;
    let (_, received) = tcp_bytes(&s);
    println!("received {got} {} tcp_received {received}", verdict(bad));
    Ok(())
}

fn send(addr: SocketAddr, len: u64) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write_pattern(&mut s, len)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let (got, bad) = read_checked(&mut s, false)?;
    let (acked, received) = tcp_bytes(&s);
    println!(
        "received {got} {} tcp_acked {acked} tcp_received {received}",
        verdict(bad)
    );
    Ok(())
}
