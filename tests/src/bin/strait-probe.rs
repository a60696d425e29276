//! A test client that can join a cgroup before it connects, so a test can
//! put "a process in the pods cgroup" without moving the test runner.
//!
//! `strait-probe [--cgroup DIR] tcp ADDR [COUNT]`: connects COUNT times
//! (default 1) and prints, per connection, the first line the server sent,
//! or `error <io::ErrorKind>` when the connect or read fails.
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::Duration;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--cgroup") {
        let dir = args.get(1).expect("--cgroup DIR").clone();
        std::fs::write(format!("{dir}/cgroup.procs"), "0").expect("join cgroup");
        args.drain(..2);
    }
    match args.first().map(String::as_str) {
        Some("tcp") => {
            let addr = args.get(1).expect("tcp ADDR");
            let count: usize = args.get(2).map_or(1, |c| c.parse().expect("COUNT"));
            for _ in 0..count {
                println!("{}", tcp_once(addr));
            }
        }
        _ => {
            eprintln!("usage: strait-probe [--cgroup DIR] tcp ADDR [COUNT]");
            std::process::exit(2);
        }
    }
}

fn tcp_once(addr: &str) -> String {
    let stream =
        match TcpStream::connect_timeout(&addr.parse().expect("ADDR"), Duration::from_secs(5)) {
            Ok(s) => s,
            Err(e) => return format!("error {:?}", e.kind()),
        };
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut line = String::new();
    match BufReader::new(stream).read_line(&mut line) {
        Ok(_) => line.trim_end().to_string(),
        Err(e) => format!("error {:?}", e.kind()),
    }
}
