//! A test client that can join a cgroup before it connects, so a test can
//! put "a process in the pods cgroup" without moving the test runner; and a
//! one-shot data path loader, so a test can load from a process that exits.
//!
//! ```text
//! strait-probe [--cgroup DIR] [--elapsed] COMMAND
//!   tcp ADDR [COUNT] [--bind-from IP] [--peer]
//!       COUNT connections one after another (default 1); with --bind-from
//!       connection i first binds to IP+i (a distinct client address; IPv4
//!       or IPv6, of the destination's family).
//!       Prints per connection the first line the server sent, or
//!       `error <io::ErrorKind>`; --peer prefixes `getpeername()`;
//!       --elapsed appends the connect time `<N>us`.
//!   hold COUNT ADDR [ADDR...]
//!       Opens COUNT connections (connection i to ADDR number i mod n) that
//!       are all open at once, then prints per connection
//!       `<local addr> <peer addr> <first line>`.
//!   udp ADDR [COUNT] [--connect]
//!       Sends `ping` COUNT times from one socket and prints per datagram
//!       `<reply source> <reply>` (or `error <kind>`).
//!   xfer ADDR SEND RECV|eof|shut
//!       One connection: writes SEND bytes, then reads RECV bytes and
//!       closes (the client closes first), or with `eof` reads until the
//!       server closes, then closes, or with `shut` shuts its sending side
//!       down first (a half-close) and then reads until the server closes.
//!       Prints `received <N>`.
//!   stuck ADDR [--shut]
//!       One connection to a server that does not read: writes until the
//!       socket's buffers are full (data left unsent), with --shut then
//!       shuts its sending side down (the FIN queued behind that data),
//!       then reads until the server resets the connection, and closes.
//!       Prints `written <N>`.
//!   reconnect ADDR SEND RECV [ADDR2 SEND2 RECV2]
//!       One socket: connects to ADDR, writes SEND bytes, reads RECV bytes,
//!       disconnects (`connect(AF_UNSPEC)`), then connects the same socket
//!       to ADDR2 and does the same and closes (or, without ADDR2, closes
//!       the disconnected socket). IPv4. Prints
//!       `received <N>` per connection.
//!   load --bpffs DIR --node NAME --attach CGROUP [--lb random|round_robin|maglev]
//!        --service VIP:PORT/PROTO=B1,B2,...  (repeatable)
//!       Loads, attaches, pins and applies the services, then exits.
//! ```
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--cgroup") {
        let dir = args.get(1).expect("--cgroup DIR").clone();
        std::fs::write(format!("{dir}/cgroup.procs"), "0").expect("join cgroup");
        args.drain(..2);
    }
    let elapsed = take_flag(&mut args, "--elapsed");
    raise_nofile();
    let cmd = if args.is_empty() {
        String::new()
    } else {
        args.remove(0)
    };
    match cmd.as_str() {
        "tcp" => {
            let bind_from = take_opt(&mut args, "--bind-from").map(|s| ip(&s));
            let peer = take_flag(&mut args, "--peer");
            let addr = sock(args.first().expect("tcp ADDR"));
            let count: u32 = args.get(1).map_or(1, |c| c.parse().expect("COUNT"));
            for i in 0..count {
                let src = bind_from.map(|b| match b {
                    IpAddr::V4(b) => IpAddr::V4(Ipv4Addr::from(u32::from(b) + i)),
                    IpAddr::V6(b) => IpAddr::V6(Ipv6Addr::from(u128::from(b) + i as u128)),
                });
                let start = Instant::now();
                let line = match connect(addr, src) {
                    Ok(s) if peer => match s.peer_addr() {
                        Ok(p) => format!("{p} {}", first_line(s)),
                        Err(e) => format!("error {:?}", e.kind()),
                    },
                    Ok(s) => first_line(s),
                    Err(e) => format!("error {:?}", e.kind()),
                };
                if elapsed {
                    println!("{line} {}us", start.elapsed().as_micros());
                } else {
                    println!("{line}");
                }
            }
        }
        "hold" => {
            let count: usize = args.first().expect("COUNT").parse().expect("COUNT");
            let addrs: Vec<SocketAddr> = args[1..].iter().map(|a| sock(a)).collect();
            assert!(!addrs.is_empty(), "hold COUNT ADDR...");
            let streams: Vec<std::io::Result<TcpStream>> = (0..count)
                .map(|i| connect(addrs[i % addrs.len()], None))
                .collect();
            for s in streams {
                match s {
                    Ok(s) => {
                        let local = s.local_addr().expect("local addr");
                        let peer = s.peer_addr().expect("peer addr");
                        println!("{local} {peer} {}", first_line(s));
                    }
                    Err(e) => println!("- - error {:?}", e.kind()),
                }
            }
        }
        "udp" => {
            let connected = take_flag(&mut args, "--connect");
            let addr = sock(args.first().expect("udp ADDR"));
            let count: u32 = args.get(1).map_or(1, |c| c.parse().expect("COUNT"));
            udp(addr, count, connected);
        }
        "xfer" => {
            let addr = sock(args.first().expect("xfer ADDR"));
            let send: usize = args.get(1).expect("SEND").parse().expect("SEND");
            let recv = args.get(2).expect("RECV|eof");
            match xfer(addr, send, recv) {
                Ok(n) => println!("received {n}"),
                Err(e) => {
                    eprintln!("strait-probe xfer: {e}");
                    std::process::exit(1);
                }
            }
        }
        "stuck" => {
            let shut = take_flag(&mut args, "--shut");
            let addr = sock(args.first().expect("stuck ADDR"));
            match stuck(addr, shut) {
                Ok(n) => println!("written {n}"),
                Err(e) => {
                    eprintln!("strait-probe stuck: {e}");
                    std::process::exit(1);
                }
            }
        }
        "reconnect" => {
            if let Err(e) = reconnect(&args) {
                eprintln!("strait-probe reconnect: {e}");
                std::process::exit(1);
            }
        }
        "load" => {
            if let Err(e) = load(args) {
                eprintln!("strait-probe load: {e:#}");
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!("usage: strait-probe [--cgroup DIR] [--elapsed] tcp|hold|udp|load ...");
            std::process::exit(2);
        }
    }
}

/// The `xfer` command: bytes received.
fn xfer(addr: SocketAddr, send: usize, recv: &str) -> std::io::Result<usize> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(&vec![b'x'; send])?;
    if recv == "shut" {
        s.shutdown(std::net::Shutdown::Write)?;
    }
    let got = if recv == "eof" || recv == "shut" {
        let mut all = Vec::new();
        s.read_to_end(&mut all)?;
        all.len()
    } else {
        let n: usize = recv.parse().expect("RECV");
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf)?;
        n
    };
    drop(s);
    Ok(got)
}

/// The `stuck` command: bytes written before the buffers filled.
fn stuck(addr: SocketAddr, shut: bool) -> std::io::Result<usize> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_nonblocking(true)?;
    let chunk = vec![b'x'; 64 * 1024];
    let mut written = 0;
    loop {
        match s.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    if shut {
        s.shutdown(std::net::Shutdown::Write)?;
    }
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(written),
        other => Err(std::io::Error::other(format!(
            "expected a reset, got {other:?}"
        ))),
    }
}

/// `connect(AF_UNSPEC)` on `s`: the kernel's `tcp_disconnect` (a reset to
/// the peer; the socket can connect again).
fn disconnect(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: an `AF_UNSPEC` sockaddr of its size on a valid socket.
    let rc = unsafe {
        let mut un: libc::sockaddr = std::mem::zeroed();
        un.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        libc::connect(
            s.as_raw_fd(),
            &un,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The `reconnect` command.
fn reconnect(args: &[String]) -> std::io::Result<()> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let conn = |i: usize| -> Option<(SocketAddrV4, usize, usize)> {
        let a = args.get(i)?;
        let SocketAddr::V4(a) = sock(a) else {
            panic!("reconnect: IPv4 only")
        };
        let n = |j: usize| args.get(j).expect("SEND RECV").parse().expect("a count");
        Some((a, n(i + 1), n(i + 2)))
    };
    let sa = sockaddr_v4;
    let len = SOCKADDR_V4_LEN;
    // SAFETY: a new descriptor this function owns from here on.
    let mut s = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        TcpStream::from_raw_fd(fd)
    };
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    for i in [0, 3] {
        let Some((addr, send, recv)) = conn(i) else {
            break;
        };
        if i > 0 {
            disconnect(&s)?;
        }
        let remote = sa(addr);
        // SAFETY: a sockaddr_in of `len` bytes on our socket.
        let rc = unsafe {
            libc::connect(
                s.as_raw_fd(),
                &remote as *const _ as *const libc::sockaddr,
                len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        s.write_all(&vec![b'x'; send])?;
        let mut buf = vec![0u8; recv];
        s.read_exact(&mut buf)?;
        println!("received {recv}");
        if conn(3).is_none() {
            disconnect(&s)?;
        }
    }
    drop(s);
    Ok(())
}

fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != flag);
    args.len() != before
}

fn take_opt(args: &mut Vec<String>, opt: &str) -> Option<String> {
    let i = args.iter().position(|a| a == opt)?;
    let v = args
        .get(i + 1)
        .unwrap_or_else(|| panic!("{opt} VALUE"))
        .clone();
    args.drain(i..i + 2);
    Some(v)
}

fn sock(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| panic!("not a socket address: {s}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|_| panic!("not an IP address: {s}"))
}

/// Connects to `addr`, first binding to `src` (port chosen by the kernel).
fn connect(addr: SocketAddr, src: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let src = match (src, addr) {
        (None, _) => return TcpStream::connect_timeout(&addr, Duration::from_secs(5)),
        (Some(IpAddr::V6(src)), SocketAddr::V6(dst)) => return connect6(src, dst),
        (Some(IpAddr::V4(src)), SocketAddr::V4(_)) => src,
        _ => panic!("--bind-from and the destination must be of one family"),
    };
    let SocketAddr::V4(dst) = addr else {
        unreachable!()
    };
    // SAFETY: plain socket syscalls on a descriptor this function owns; the
    // sockaddr structs live across the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let sa = sockaddr_v4;
        let len = SOCKADDR_V4_LEN;
        let local = sa(SocketAddrV4::new(src, 0));
        if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sa(dst);
        if libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// [`connect`] for IPv6: binds to `src`, then connects to `dst`.
fn connect6(src: Ipv6Addr, dst: std::net::SocketAddrV6) -> std::io::Result<TcpStream> {
    // SAFETY: as in `connect`.
    unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let sa = |ip: Ipv6Addr, port: u16| libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: port.to_be(),
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr {
                s6_addr: ip.octets(),
            },
            sin6_scope_id: 0,
        };
        let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        let local = sa(src, 0);
        if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sa(*dst.ip(), dst.port());
        if libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

fn first_line(stream: TcpStream) -> String {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut line = String::new();
    match BufReader::new(stream).read_line(&mut line) {
        Ok(_) => line.trim_end().to_string(),
        Err(e) => format!("error {:?}", e.kind()),
    }
}

fn udp(addr: SocketAddr, count: u32, connected: bool) {
    let any = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(any).expect("bind udp");
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok();
    if connected {
        if let Err(e) = sock.connect(addr) {
            println!("error {:?}", e.kind());
            return;
        }
    }
    let mut buf = [0u8; 512];
    for _ in 0..count {
        let sent = if connected {
            sock.send(b"ping")
        } else {
            sock.send_to(b"ping", addr)
        };
        if let Err(e) = sent {
            println!("error {:?}", e.kind());
            continue;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => println!("{from} {}", String::from_utf8_lossy(&buf[..n])),
            Err(e) => println!("error {:?}", e.kind()),
        }
    }
}

/// `load`: a loader process that pins everything and exits, as a daemon
/// that stops would.
fn load(mut args: Vec<String>) -> anyhow::Result<()> {
    use strait::datapath::{
        Datapath, DatapathConfig, L4Backend, L4LoadBalancer, L4Mode, L4Protocol, L4Service,
    };
    let bpffs = take_opt(&mut args, "--bpffs").expect("--bpffs DIR");
    let node = take_opt(&mut args, "--node").expect("--node NAME");
    let cgroup = take_opt(&mut args, "--attach").expect("--attach CGROUP");
    let lb = match take_opt(&mut args, "--lb").as_deref() {
        None | Some("random") => L4LoadBalancer::Random,
        Some("round_robin") => L4LoadBalancer::RoundRobin,
        Some("maglev") => L4LoadBalancer::Maglev,
        Some(other) => anyhow::bail!("unknown --lb {other}"),
    };
    let mut services = Vec::new();
    while let Some(spec) = take_opt(&mut args, "--service") {
        let (front, backs) = spec.split_once('=').expect("VIP:PORT/PROTO=B1,...");
        let (vip, proto) = front.split_once('/').expect("VIP:PORT/PROTO");
        let vip = sock(vip);
        services.push(L4Service {
            host: format!("{vip}.probe"),
            vip: vip.ip(),
            port: vip.port(),
            protocol: if proto == "udp" {
                L4Protocol::Udp
            } else {
                L4Protocol::Tcp
            },
            mode: L4Mode::L4,
            load_balancer: lb,
            backends: backs
                .split(',')
                .filter(|b| !b.is_empty())
                .map(|b| L4Backend {
                    addr: sock(b),
                    weight: 1,
                    healthy: true,
                })
                .collect(),
        });
    }
    let mut config = DatapathConfig::new(node);
    config.bpffs = bpffs.into();
    let mut dp = Datapath::new(&config)?;
    dp.attach(std::path::Path::new(&cgroup))?;
    let report = dp.apply(&services)?;
    println!("loaded {} services ({report:?})", dp.service_count());
    Ok(())
}

/// 1,000 concurrent connections need more than the usual 1,024 soft limit
/// once the runtime's own descriptors are counted.
fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let r = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: r.maximum,
            maximum: r.maximum,
        },
    );
}

/// `a` as the kernel's `struct sockaddr_in` (port and address in network
/// byte order), for the raw socket calls above.
fn sockaddr_v4(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// The size of a `struct sockaddr_in`, bytes.
const SOCKADDR_V4_LEN: libc::socklen_t =
    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
