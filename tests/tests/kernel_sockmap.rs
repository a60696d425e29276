//! Tier 2: what this machine's kernel does with loopback TCP pairs whose
//! ends are in `SOCKMAP` with `sockmap_redirect` attached (the
//! `strait run --sockmap` redirect, issue 20) — the three costs README's
//! "Same-node hops without TCP" lists, each reproduced on sockets the test
//! inserts itself (no sockops program, so the moment each end enters the
//! map is the test's choice), and the ordering fix (`SOCKMAP_TCP`).
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use aya::Ebpf;
use proxy_common::SockPair;
use strait::datapath::sockmap;

/// The eBPF object with `sockmap_redirect` attached to its `SOCKMAP`, or
/// `None` when the test may not run (see `privileged::require`).
fn redirect(test: &str) -> Option<Ebpf> {
    strait_tests::privileged::require(test)?;
    Some(sockmap::load_redirect().expect("loading the eBPF object with the redirect"))
}

/// A connected loopback pair: (client, the server's accepted end).
fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    for x in [&c, &s] {
        x.set_nodelay(true).unwrap();
        x.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    }
    (c, s)
}

/// A socket's own 4-tuple, the form `SOCKMAP` keys it by.
fn key(s: &TcpStream) -> SockPair {
    let ip = |a: SocketAddr| match a {
        SocketAddr::V4(a) => u32::from(*a.ip()).to_be(),
        SocketAddr::V6(_) => unreachable!("IPv4 loopback"),
    };
    let (l, r) = (s.local_addr().unwrap(), s.peer_addr().unwrap());
    SockPair {
        local_ip: ip(l),
        remote_ip: ip(r),
        local_port: l.port() as u32,
        remote_port: r.port() as u32,
    }
}

fn insert(ebpf: &mut Ebpf, s: &TcpStream) {
    sockmap::insert(ebpf, key(s), s).expect("inserting into SOCKMAP");
}

/// `TCP_INFO`'s `tcpi_bytes_acked` of `s`: what it sent through TCP.
fn tcp_bytes_acked(s: &TcpStream) -> u64 {
    use std::os::fd::AsRawFd;
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
        assert_eq!(r, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        info.tcpi_bytes_acked
    }
}

/// Reads exactly `n` bytes from `s` (blocking), retrying the `EAGAIN` a
/// socket in the map can return (cost 2 below).
fn read_n(mut s: &TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut buf[got..]) {
            Ok(0) => panic!("end of stream after {got} of {n} bytes"),
            Ok(k) => got += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading after {got} of {n} bytes: {e}"),
        }
    }
    buf
}

/// The client's first bytes leave over TCP because the server's end is
/// not in the map yet (the start-of-connection window: the client's end is
/// inserted at its ACTIVE_ESTABLISHED, the proxy's at the later
/// PASSIVE_ESTABLISHED); its later bytes must not overtake them. The
/// kernel reads the redirected queue first (shown with the client's first
/// bytes unseen by the program, as nothing remembered them before the
/// fix), so
/// `sockmap_redirect` keeps such a client on TCP for good.
#[test]
fn a_client_whose_first_bytes_took_tcp_keeps_its_order() {
    let Some(mut ebpf) = redirect("kernel_sockmap_order") else {
        return;
    };
    for fixed in [true, false] {
        let (c, s) = pair();
        if fixed {
            insert(&mut ebpf, &c);
        }
        (&c).write_all(&[b'A'; 1000]).unwrap();
        if fixed {
            assert!(
                sockmap::on_tcp(&ebpf, &key(&c)).unwrap(),
                "a send without a peer in the map marks the sender"
            );
        } else {
            // What the program did before the mark: nothing remembered
            // the client's TCP bytes (here: they left before it was in
            // the map, so no program saw them).
            insert(&mut ebpf, &c);
        }
        // The server's end enters the map before it has read them.
        insert(&mut ebpf, &s);
        if fixed {
            // The psock keeps the verdict even if the LRU lost the mark.
            let map = ebpf.map_mut(sockmap::SOCKMAP_TCP).unwrap();
            let mut tcp: aya::maps::HashMap<_, SockPair, u8> =
                aya::maps::HashMap::try_from(map).unwrap();
            tcp.remove(&key(&c)).unwrap();
        }
        (&c).write_all(&[b'B'; 1000]).unwrap();
        let got = read_n(&s, 2000);
        let first_b = got.iter().position(|&b| b == b'B').unwrap();
        if fixed {
            assert_eq!(first_b, 1000, "bytes out of order: {:?}", &got[..16]);
            assert!(tcp_bytes_acked(&c) >= 2000, "both writes went through TCP");
        } else {
            assert_eq!(
                first_b, 0,
                "without the mark the redirected bytes are read first \
                 (if this kernel reads TCP first, the mark is not needed)"
            );
        }
        // The other direction moves to TCP with it (replies carry the
        // ACKs, as over TCP) and its bytes still arrive.
        if fixed {
            assert!(sockmap::on_tcp(&ebpf, &key(&s)).unwrap());
        }
        (&s).write_all(b"reply").unwrap();
        assert_eq!(read_n(&c, 5), b"reply");
    }
}

/// Many connections at once whose two ends enter the map as the
/// test's threads race: each client writes a numbered sequence right
/// after `connect()` while its server's end is inserted concurrently, and
/// every server reads it back in order.
#[test]
fn many_connections_racing_their_insert_keep_their_order() {
    let Some(ebpf) = redirect("kernel_sockmap_order_stress") else {
        return;
    };
    let ebpf = std::sync::Arc::new(std::sync::Mutex::new(ebpf));
    const CONNS: usize = 200;
    const WORDS: u32 = 2000;
    let mut on_tcp = 0;
    let mut threads = Vec::new();
    for _ in 0..CONNS {
        let (c, s) = pair();
        insert(&mut ebpf.lock().unwrap(), &c);
        let e = ebpf.clone();
        let inserter = std::thread::spawn(move || {
            insert(&mut e.lock().unwrap(), &s);
            s
        });
        let writer = std::thread::spawn(move || {
            for i in 0..WORDS {
                (&c).write_all(&i.to_be_bytes()).unwrap();
            }
            c
        });
        threads.push((inserter, writer));
    }
    for (inserter, writer) in threads {
        let s = inserter.join().unwrap();
        let c = writer.join().unwrap();
        let got = read_n(&s, WORDS as usize * 4);
        for (i, w) in got.chunks(4).enumerate() {
            assert_eq!(
                u32::from_be_bytes(w.try_into().unwrap()),
                i as u32,
                "connection {:?}: word {i} out of order",
                key(&c)
            );
        }
        if sockmap::on_tcp(&ebpf.lock().unwrap(), &key(&c)).unwrap() {
            on_tcp += 1;
        }
    }
    eprintln!("{on_tcp} of {CONNS} clients raced their server's insert and stayed on TCP");
}

/// `SO_MEMINFO`'s receive-queue memory (`SK_MEMINFO_RMEM_ALLOC`) and
/// receive buffer (`SK_MEMINFO_RCVBUF`) of `s`, in bytes.
fn meminfo(s: &TcpStream) -> (u32, u32) {
    use std::os::fd::AsRawFd;
    let mut m = [0u32; 9];
    let mut len = std::mem::size_of_val(&m) as libc::socklen_t;
    // SAFETY: `m` is writable for `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            m.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "SO_MEMINFO: {}", std::io::Error::last_os_error());
    (m[0], m[1])
}

/// How many bytes a non-blocking writer gets accepted before `EAGAIN`
/// (capped at `cap`) while its peer reads nothing; the bytes are a
/// counter (byte `i` is `i % 251`), so the reader can check their order.
fn push_until_blocked(c: &TcpStream, cap: usize) -> usize {
    c.set_nonblocking(true).unwrap();
    let mut total = 0;
    let mut chunk = vec![0u8; 64 << 10];
    while total < cap {
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = ((total + i) % 251) as u8;
        }
        match (&*c).write(&chunk) {
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("write after {total} bytes: {e}"),
        }
    }
    c.set_nonblocking(false).unwrap();
    total
}

/// Reads `n` counter bytes (see [`push_until_blocked`]) from `s` and
/// checks their order.
fn read_counter(s: &TcpStream, n: usize) {
    let mut at = 0;
    while at < n {
        let k = (n - at).min(1 << 20);
        let got = read_n(s, k);
        if let Some(i) = (0..k).find(|&i| got[i] != ((at + i) % 251) as u8) {
            panic!("byte {} out of order", at + i);
        }
        at += k;
    }
}

/// A listener whose accepted sockets `sockmap_daemon_ops` inserts into
/// `SOCKMAP` with their kernel address, as the daemon's proxy end is (the
/// listener is made in `cg`, where the program is attached, and named in
/// `PROXY_CONFIG`); the test process is in `cg` only while it binds.
fn proxy_listener(ebpf: &mut Ebpf, cg: &strait_tests::cgroup::TestCgroup) -> TcpListener {
    use aya::programs::{links::CgroupAttachMode, SockOps};
    let ops: &mut SockOps = ebpf
        .program_mut(sockmap::DAEMON_OPS)
        .unwrap()
        .try_into()
        .unwrap();
    ops.load().unwrap();
    ops.attach(
        std::fs::File::open(cg.path()).unwrap(),
        CgroupAttachMode::Single,
    )
    .unwrap();
    let own = sockmap::own_cgroup().unwrap();
    let pid = std::process::id().to_string();
    std::fs::write(cg.path().join("cgroup.procs"), &pid).unwrap();
    let l = TcpListener::bind("127.0.0.1:0");
    std::fs::write(own.join("cgroup.procs"), &pid).unwrap();
    let l = l.unwrap();
    let SocketAddr::V4(a) = l.local_addr().unwrap() else {
        unreachable!()
    };
    let mut cfg: aya::maps::Array<_, proxy_common::ProxyConfig> =
        aya::maps::Array::try_from(ebpf.map_mut("PROXY_CONFIG").unwrap()).unwrap();
    let value = proxy_common::ProxyConfig {
        ip: u32::from(*a.ip()).to_be(),
        port: a.port().to_be(),
        pad: 0,
    };
    cfg.set(0, value, 0).unwrap();
    l
}

/// Cost 1 (what a slow reader makes the node hold), and its bound. Over
/// TCP a writer whose peer reads nothing is stopped by the peer's receive
/// buffer and its own send buffer (a few MiB at most). The kernel queues
/// redirected data on the receiver's psock past its `SO_RCVBUF` (shown
/// with a receiver inserted without its address, so unbounded). With the
/// receiver's address known (inserted by the sockops program, as the
/// daemon's proxy end is), `sockmap_redirect` stops redirecting once the
/// receiver holds its buffer's worth and the writer continues over TCP,
/// where the receiver's window stops it; every byte still arrives in
/// order.
#[test]
fn a_redirected_writer_is_stopped_by_its_readers_buffer() {
    let Some(p) = strait_tests::privileged::require("kernel_sockmap_backpressure") else {
        return;
    };
    let mut ebpf = sockmap::load_redirect().unwrap();
    const CAP: usize = 64 << 20;
    let (c, s) = pair();
    let over_tcp = push_until_blocked(&c, CAP);
    let (rmem_tcp, rcvbuf) = meminfo(&s);
    read_counter(&s, over_tcp);

    let (c, s) = pair();
    insert(&mut ebpf, &c);
    insert(&mut ebpf, &s);
    let unbounded = push_until_blocked(&c, CAP);
    let (rmem_unbounded, _) = meminfo(&s);
    read_counter(&s, unbounded);

    let cg = strait_tests::cgroup::TestCgroup::new(&p.cgroup2, "sockmap").unwrap();
    let l = proxy_listener(&mut ebpf, &cg);
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    insert(&mut ebpf, &c);
    let keys = sockmap::pairs(&ebpf).unwrap();
    assert!(
        keys.contains(&key(&s)),
        "the sockops program inserted the server's end"
    );
    let bounded = push_until_blocked(&c, CAP);
    let (rmem_bounded, rcvbuf_bounded) = meminfo(&s);
    let acked = tcp_bytes_acked(&c);
    eprintln!(
        "non-reading peer: over TCP {over_tcp} bytes accepted (receiver rmem {rmem_tcp}, rcvbuf {rcvbuf}); \
         redirected without the bound {unbounded} (rmem {rmem_unbounded}); \
         with the bound {bounded} (rmem {rmem_bounded}, rcvbuf {rcvbuf_bounded}, {acked} through TCP)"
    );
    assert!(over_tcp < 16 << 20, "TCP stopped the writer: {over_tcp}");
    assert!(
        unbounded >= CAP,
        "the kernel stopped the redirect at {unbounded} bytes by itself: README's --sockmap section is out of date"
    );
    assert!(
        bounded < 16 << 20 && (rmem_bounded as usize) < 8 << 20,
        "the bound held the writer: {bounded} accepted, receiver rmem {rmem_bounded}"
    );
    assert!(
        sockmap::on_tcp(&ebpf, &key(&c)).unwrap(),
        "the writer moved to TCP"
    );
    assert!(
        (acked as usize) < bounded,
        "the first bytes were redirected ({acked} of {bounded} through TCP)"
    );
    read_counter(&s, bounded);
}

/// Cost 2: a blocking `recv()` on a socket in the map returns `EAGAIN`
/// when the thread is woken without data — e.g. by its own socket's
/// write-space wake-up while another thread of the program writes over
/// TCP (`tcp_bpf_recvmsg` → `tcp_msg_wait_data` returns 0 on any wake-up).
/// Returns the number of `EAGAIN`s a blocked reader saw while a writer
/// thread sent `bytes` on the same socket to a peer that reads them.
/// `both`: the server's end is in the map too, so the client's sends are
/// redirected instead (no TCP, no ACKs).
fn spurious_eagains(ebpf: Option<&mut Ebpf>, bytes: usize, both: bool) -> usize {
    let (c, s) = pair();
    c.set_read_timeout(None).unwrap();
    if let Some(ebpf) = ebpf {
        // Only the client: its sends find no peer and take TCP (as a
        // client that raced its proxy's insert, or hit the bound, does).
        insert(ebpf, &c);
        if both {
            insert(ebpf, &s);
        }
    }
    let reader = c.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut eagain = 0;
        let mut buf = [0u8; 16];
        loop {
            match (&reader).read(&mut buf) {
                Ok(_) => return eagain,
                Err(e) if e.kind() == ErrorKind::WouldBlock => eagain += 1,
                Err(e) => panic!("blocking read: {e}"),
            }
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let drain = std::thread::spawn(move || {
        let mut left = bytes;
        let mut buf = vec![0u8; 4096];
        while left > 0 {
            let n = match (&s).read(&mut buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                r => r.unwrap(),
            };
            assert!(n > 0);
            left -= n;
            // A slow reader: the writer's send buffer fills, so ACKs wake it.
            if left % (1 << 20) < 4096 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        (&s).write_all(b"end").unwrap();
        s
    });
    let chunk = vec![b'y'; 256 << 10];
    let mut sent = 0;
    while sent < bytes {
        (&c).write_all(&chunk).unwrap();
        sent += chunk.len();
    }
    let _s = drain.join().unwrap();
    reader.join().unwrap()
}

#[test]
fn a_blocking_reader_on_a_socket_in_the_map_can_see_eagain() {
    let Some(mut ebpf) = redirect("kernel_sockmap_eagain") else {
        return;
    };
    const BYTES: usize = 64 << 20;
    let plain = spurious_eagains(None, BYTES, false);
    let redirected = spurious_eagains(Some(&mut ebpf), BYTES, true);
    // The wake-ups depend on the writer filling its send buffer: a loaded
    // machine may need another try.
    let mut in_map = 0;
    for _ in 0..3 {
        in_map = spurious_eagains(Some(&mut ebpf), BYTES, false);
        if in_map > 0 {
            break;
        }
    }
    eprintln!(
        "blocking reader while its socket sent {BYTES} bytes: over TCP {plain} EAGAIN outside the map, \
         {in_map} in it; {redirected} when the bytes were redirected"
    );
    assert_eq!(plain, 0, "a blocking TCP read never returns EAGAIN");
    assert!(
        in_map > 0,
        "no EAGAIN for a socket in the map: this kernel fixed tcp_bpf_recvmsg's wake-up"
    );
}
