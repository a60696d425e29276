//! `strait ca inspect`: a node's workload certificates from its admin API's
//! `/certs`, printed like `istioctl proxy-config secret`.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use super::out;

/// GET `/certs` from the admin API at `admin` (plain HTTP/1.0).
fn fetch(admin: SocketAddr) -> Result<serde_json::Value, String> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(5))
        .map_err(|e| format!("cannot reach the admin API at {admin}: {e} (pass --admin ADDR)"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(format!("GET /certs HTTP/1.0\r\nHost: {admin}\r\n\r\n").as_bytes())
        .map_err(|e| format!("{admin}: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .map_err(|e| format!("{admin}: {e}"))?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{admin}: not an HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "{admin}/certs: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    serde_json::from_str(body).map_err(|e| format!("{admin}/certs: bad JSON: {e}"))
}

/// Prints the table (or the JSON with `json`). Exit 1 when unreachable.
pub fn run(admin: SocketAddr, json: bool) -> ExitCode {
    let v = match fetch(admin) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("strait: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        out(&serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("-").to_string();
    let mut rows = vec![[
        "RESOURCE NAME".to_string(),
        "TYPE".into(),
        "SERIAL NUMBER".into(),
        "NOT BEFORE".into(),
        "NOT AFTER".into(),
        "RENEWAL IN".into(),
        "ISSUER".into(),
    ]];
    for c in v["certificates"].as_array().into_iter().flatten() {
        let issuer = c["issuer_chain"]
            .as_array()
            .and_then(|a| a.first())
            .map(|i| s(&i["subject"]))
            .unwrap_or_else(|| "-".into());
        rows.push([
            s(&c["identity"]),
            "Cert Chain".into(),
            s(&c["serial_number"]),
            s(&c["valid_from"]),
            s(&c["expiration_time"]),
            format!("{}s", c["seconds_to_renewal"].as_i64().unwrap_or(0)),
            issuer,
        ]);
    }
    for r in v["trust_bundle"].as_array().into_iter().flatten() {
        rows.push([
            "ROOTCA".into(),
            "CA".into(),
            s(&r["serial"]),
            s(&r["not_before"]),
            s(&r["not_after"]),
            "-".into(),
            s(&r["subject"]),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out(line.join("  ").trim_end());
    }
    ExitCode::SUCCESS
}
