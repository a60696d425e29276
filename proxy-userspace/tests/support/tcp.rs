//! Raw TCP helpers: an echo backend that first says its name, a minimal TLS
//! ClientHello with SNI, and a raw HTTP/1.1 upgrade handshake.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP backend: writes `name:` then echoes everything; stops when dropped.
pub struct TcpBackend {
    /// Listening address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpBackend {
    /// Starts on `addr`.
    pub async fn start(name: &str, addr: SocketAddr) -> std::io::Result<Self> {
        let l = TcpListener::bind(addr).await?;
        let addr = l.local_addr()?;
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let name = name.clone();
                tokio::spawn(async move {
                    let _ = s.write_all(format!("{name}:").as_bytes()).await;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(Self { addr, task })
    }
}

/// A TLS 1.2-format ClientHello record carrying `sni` (RFC 8446 §4.1.2,
/// RFC 6066 §3). Enough for SNI routing; no handshake follows.
pub fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut sni_ext = Vec::new();
    sni_ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni_ext.push(0);
    sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(name);
    let mut exts = vec![0, 0];
    exts.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
    exts.extend_from_slice(&sni_ext);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01]);
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// Connects, sends `first`, and reads until `want` bytes arrived or EOF.
pub async fn exchange(addr: SocketAddr, first: &[u8], want: usize) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(first).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < want {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("reply in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// An HTTP/1.1 backend that records every byte it receives, exactly, and
/// answers `200 ok` (`content-length: 2`) per request head (`\r\n\r\n`)
/// seen: what a smuggling test needs to see whether a second request
/// reached it. Stops when dropped.
pub struct RawHttpBackend {
    /// Listening address.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawHttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawHttpBackend {
    /// Starts on `addr`.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let l = TcpListener::bind(addr).await?;
        let addr = l.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let rec = rec.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    let mut answered = 0;
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        rec.lock().unwrap().extend_from_slice(&buf[..n]);
                        mine.extend_from_slice(&buf[..n]);
                        let heads = mine.windows(4).filter(|w| w == b"\r\n\r\n").count();
                        while answered < heads {
                            answered += 1;
                            let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if s.write_all(r).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Ok(Self {
            addr,
            received,
            task,
        })
    }

    /// Every byte received so far, all connections in arrival order.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }

    /// Request lines received so far (lines ending in ` HTTP/1.1`).
    pub fn requests(&self) -> usize {
        self.received()
            .split("\r\n")
            .filter(|l| l.ends_with(" HTTP/1.1") || l.ends_with(" HTTP/1.0"))
            .count()
    }
}
