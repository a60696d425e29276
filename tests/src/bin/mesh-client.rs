//! A client for the demo and the end-to-end tests, run inside a pod (its
//! netns and cgroup, so the kernel's socket hooks see it): sends GET
//! requests, one connection each, and prints one JSON line per request:
//! `{"t_ms":..,"status":..,"latency_us":..,"body":{..}}` (`t_ms` since start;
//! status 0 and `"error"` when the request failed).
//!
//! `mesh-client --url URL [--header "K: V"]... (--count N | --duration-ms MS) [--interval-ms MS]`
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use strait_tests::node::http;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut url = None;
    let mut headers: Vec<(String, String)> = Vec::new();
    let (mut count, mut duration_ms, mut interval_ms) = (None, None, 0u64);
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--url" => url = Some(v),
            "--header" => {
                let (k, val) = v.split_once(':').expect("--header 'K: V'");
                headers.push((k.trim().to_string(), val.trim().to_string()));
            }
            "--count" => count = Some(v.parse::<usize>().expect("--count N")),
            "--duration-ms" => duration_ms = Some(v.parse::<u64>().expect("--duration-ms MS")),
            "--interval-ms" => interval_ms = v.parse().expect("--interval-ms MS"),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    let url = url.expect("--url http://ADDR/PATH");
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr: SocketAddr = authority
        .to_socket_addrs()
        .expect("URL address")
        .next()
        .expect("URL address");
    let hdrs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let start = Instant::now();
    let mut sent = 0usize;
    loop {
        if count.is_some_and(|c| sent >= c)
            || duration_ms.is_some_and(|d| start.elapsed() >= Duration::from_millis(d))
        {
            break;
        }
        let t = start.elapsed();
        let t0 = Instant::now();
        let r = http::get(addr, authority, path, &hdrs);
        let latency = t0.elapsed();
        let line = match r {
            Ok((status, body)) => serde_json::json!({
                "t_ms": t.as_millis() as u64, "status": status,
                "latency_us": latency.as_micros() as u64, "body": body,
            }),
            Err(e) => serde_json::json!({
                "t_ms": t.as_millis() as u64, "status": 0,
                "latency_us": latency.as_micros() as u64, "error": format!("{e:#}"),
            }),
        };
        println!("{line}");
        sent += 1;
        if interval_ms > 0 {
            std::thread::sleep(Duration::from_millis(interval_ms));
        }
    }
}
