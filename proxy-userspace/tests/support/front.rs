//! A proxy's front door for tests that build their own [`Proxy`]: a
//! listener on loopback whose connections all go to one destination, and
//! the access-log records it writes.
use std::net::SocketAddr;
use std::time::Duration;

use strait::serve::{AccessLogRecord, FixedDestination, Proxy};
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

/// Serves `proxy` on a new listener at `127.0.0.1` (an ephemeral port),
/// every accepted connection taken as bound for `dst` (the VIP:port a
/// redirected client would have dialled). Returns the listener's address
/// and the serving task; dropping the handle leaves the task running,
/// aborting it closes the listener.
pub async fn serve_fixed(proxy: Proxy, dst: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = proxy.serve(l, FixedDestination(dst)).await;
    });
    (front, task)
}

/// The next access-log record from `rx`; panics when none comes within
/// 30 s or the proxy dropped the sender.
pub async fn next_record(rx: &mut UnboundedReceiver<AccessLogRecord>) -> AccessLogRecord {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("an access-log record")
        .unwrap()
}
