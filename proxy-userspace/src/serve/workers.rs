//! Thread-per-core serving, as nginx workers and Envoy worker threads: N OS
//! threads, each running its own single-threaded tokio runtime that
//! accepts on the shared listening socket and serves the connections it
//! accepted to the end. A request never changes thread, so there is no
//! work stealing and no cross-thread wake-up on the hot path.
//!
//! Every worker accepts on a duplicate of one listening socket (nginx
//! without `reuseport`): the port is bound once, so a second proxy on the
//! same address still fails with "address in use" instead of silently
//! sharing the port as `SO_REUSEPORT` would allow.
//!
//! The route table is shared by all workers through the proxy's `ArcSwap`,
//! so a snapshot swap reaches every worker at once.
//!
//! Scheduling at a low request rate (issue 20, measured through two HBONE
//! hops at 1,000 requests/s with both nodes' workers and the backend on
//! one CPU): a worker sleeps in `epoll_wait` up to twice per request, and
//! about 1.8 times per request (both nodes together) it is preempted at the
//! return of the `writev`/`sendto` that woke the next task on its CPU
//! (the other node's worker, the backend), then switched in again to
//! finish its turn before it can take the response. Making the workers
//! `SCHED_BATCH` (no wake-up preemption) cut their CPU per request by
//! ~40% but let a woken worker wait behind any CPU-bound task (p50 7–9 ms
//! on a loaded machine); nice −5 and a 100 µs slice (`slice.rs`) did not
//! lower CPU or switches per request. What did shorten the tail is a
//! worker that never waits behind another task when it wakes:
//! `SCHED_FIFO` while lightly loaded, the fair class while busy
//! (`--worker-priority auto`, the default: `sched.rs`, `sched_auto.rs`,
//! which each worker applies to itself when it starts); figures in
//! ARCHITECTURE.md ("Per request through two hops").
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{server, Shared};
use crate::transport::orig_dst::OriginalDst;

/// Running worker threads. Dropping this without [`Workers::shutdown`]
/// leaves them serving until the process exits.
pub struct Workers {
    local: SocketAddr,
    stop: watch::Sender<Option<Instant>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The worker threads' kernel thread ids, in worker order.
    tids: Vec<i32>,
    spawner: WorkerSpawner,
    /// `--worker-priority auto`'s monitor (`sched_auto.rs`); stops when
    /// dropped.
    _sched: Option<super::sched_auto::Monitor>,
}

/// Spawns tasks onto the workers' runtimes, one worker after the other
/// (round robin), so connections that arrive elsewhere (the HBONE
/// listeners in pods' namespaces) are served on the same single-threaded
/// runtimes as the proxy's own. Cheap to clone.
///
/// Why: a current-thread runtime runs woken tasks in FIFO order, so every
/// stream's write wakes the HTTP/2 connection task once per scheduler
/// round and it sends all of them in one TLS record and one syscall; the
/// multi-threaded runtime's LIFO slot runs the connection task right after
/// each stream instead (one record and one `writev` per response).
#[derive(Clone, Debug)]
pub struct WorkerSpawner {
    handles: Arc<[tokio::runtime::Handle]>,
    next: Arc<AtomicUsize>,
}

impl WorkerSpawner {
    /// Runs `f` on the next worker's runtime. After the workers stopped,
    /// `f` is dropped without running.
    pub fn spawn<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        drop(self.handles[i].spawn(f));
    }
}

impl Workers {
    /// Starts `n` (at least 1) workers accepting on `listener` and, when
    /// given, on `second` too (the IPv6 outbound listener).
    ///
    /// Errors: a listener cannot be duplicated or made non-blocking, or a
    /// thread or runtime cannot be created.
    pub(crate) fn start(
        shared: Arc<Shared>,
        listener: std::net::TcpListener,
        second: Option<std::net::TcpListener>,
        orig: Arc<dyn OriginalDst>,
        n: usize,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        if let Some(l) = &second {
            l.set_nonblocking(true)?;
        }
        let local = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(None);
        let mut threads = Vec::new();
        let mut handles = Vec::new();
        let slice = shared.settings.worker_slice;
        let priority = shared.settings.worker_priority;
        let required = shared.settings.worker_priority_required;
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        for i in 0..n.max(1) {
            let l = listener.try_clone()?;
            let l2 = second.as_ref().map(|l| l.try_clone()).transpose()?;
            let rt = worker_runtime()?;
            handles.push(rt.handle().clone());
            let (shared, orig, stop) = (shared.clone(), orig.clone(), stop_rx.clone());
            let started_tx = started_tx.clone();
            let t = std::thread::Builder::new()
                .name(format!("strait-worker-{i}"))
                .spawn(move || {
                    // The slice is asked for by the worker thread itself:
                    // `sched_setattr` changes only the calling thread.
                    // So is the priority (`sched.rs`): per thread too.
                    let refused = priority.and_then(|p| p.apply_to_this_thread().err());
                    let asked = slice.map(super::slice::request);
                    let tid = rustix::thread::gettid().as_raw_nonzero().get();
                    let serve = refused.is_none() || !required;
                    let _ = started_tx.send((i, tid, asked, refused));
                    drop(started_tx);
                    if serve {
                        rt.block_on(worker(shared, l, l2, orig, stop))
                    }
                })?;
            threads.push(t);
        }
        drop(started_tx);
        let mut started: Vec<_> = started_rx.iter().collect();
        started.sort_by_key(|(i, ..)| *i);
        let refused = started.iter_mut().find_map(|(.., refused)| refused.take());
        let p = priority.map(|p| p.to_string()).unwrap_or_default();
        if let (Some(e), false) = (&refused, required) {
            // Those that took it go back to the fair class (always allowed):
            // no worker keeps `SCHED_FIFO` without the monitor.
            for (_, tid, ..) in &started {
                let _ = super::sched::set_class(*tid, super::sched::Class::Fair, 0);
            }
            tracing::warn!(
                "proxy workers: the kernel refused the scheduling priority {p} (--worker-priority's default), they run at the daemon's own: {e}"
            );
        }
        if let (Some(e), true) = (refused.as_ref(), required) {
            // Every worker that did take it is serving: stop them now.
            let _ = stop.send(Some(Instant::now()));
            for t in threads {
                let _ = t.join();
            }
            return Err(std::io::Error::new(
                e.kind(),
                format!("--worker-priority {p}: the kernel refused it for a proxy worker: {e}"),
            ));
        }
        let tids: Vec<i32> = started.iter().map(|(_, tid, ..)| *tid).collect();
        let sched = match priority {
            Some(super::sched::WorkerPriority::Auto) if refused.is_none() => Some(
                super::sched_auto::start(tids.clone(), super::sched::AUTO_FIFO)?,
            ),
            _ => None,
        };
        if let Some(s) = slice {
            report_slices(s, started.into_iter().filter_map(|(_, _, r, _)| r));
        }
        Ok(Self {
            local,
            stop,
            threads,
            tids,
            spawner: WorkerSpawner {
                handles: handles.into(),
                next: Arc::new(AtomicUsize::new(0)),
            },
            _sched: sched,
        })
    }

    /// Spawns tasks onto these workers ([`WorkerSpawner`]).
    pub fn spawner(&self) -> WorkerSpawner {
        self.spawner.clone()
    }

    /// The worker threads' kernel thread ids (for per-thread statistics,
    /// `/proc/self/task/<tid>/`), one per worker.
    pub fn thread_ids(&self) -> &[i32] {
        &self.tids
    }

    /// The address the workers accept on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops accepting, lets connections in flight finish for up to
    /// `drain`, then closes the rest and waits for the threads to end.
    pub async fn shutdown(self, drain: Duration) {
        let _ = self.stop.send(Some(Instant::now() + drain));
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }

    /// Blocks until every worker has ended (they end only on
    /// [`Workers::shutdown`] or when accepting fails).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Logs what the workers' slice requests got, once for all workers: the
/// slice at debug level, a refusal as a warning (the workers then run with
/// the kernel's default slice, nothing else changes).
fn report_slices(
    asked: Duration,
    results: impl Iterator<Item = Result<Duration, super::slice::SliceError>>,
) {
    let (mut granted, mut failed) = (0, None);
    for r in results {
        match r {
            Ok(_) => granted += 1,
            Err(e) => failed = Some(e),
        }
    }
    match failed {
        None => tracing::debug!("{granted} proxy workers run with a {asked:?} scheduler slice"),
        Some(e) => tracing::warn!(
            "proxy workers: the scheduler slice of {asked:?} (--worker-slice-us) is not in force, the kernel's default applies: {e}"
        ),
    }
}

/// One worker's runtime: single-threaded, with the I/O and timer drivers
/// only. Not `enable_all`: the signal and child-process drivers would sit
/// under every park of the worker (a self-pipe in its epoll set and an
/// orphan-reaping pass before each sleep) although no proxy path waits on
/// a signal or a child; the daemon's own runtime keeps them (issue 20:
/// per-request cost of going idle at low rates).
///
/// Errors: the runtime's epoll instance or timer cannot be created.
fn worker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
}

/// Binds a listening socket for [`Workers`] as tokio's `TcpListener::bind`
/// does (`SO_REUSEADDR`, backlog 1024), without `SO_REUSEPORT`; an IPv6
/// address with `IPV6_V6ONLY`.
///
/// Errors: the address is in use or not local.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    // An IPv6 listener takes IPv6 only: IPv4 has its own listener (and,
    // in the daemon, its own source filter).
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(sock.into())
}

async fn worker(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    second: Option<std::net::TcpListener>,
    orig: Arc<dyn OriginalDst>,
    mut stop: watch::Receiver<Option<Instant>>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let second = match second.map(tokio::net::TcpListener::from_std).transpose() {
        Ok(l) => l,
        Err(_) => return,
    };
    let live = Arc::new(AtomicUsize::new(0));
    let serve = async {
        let first = server::serve_counted(shared.clone(), listener, orig.clone(), live.clone());
        match second {
            // Either listener failing for good stops the worker, as one
            // does alone.
            Some(l) => tokio::select! {
                r = first => r,
                r = server::serve_counted(shared, l, orig, live.clone()) => r,
            },
            None => first.await,
        }
    };
    tokio::select! {
        r = serve => {
            if let Err(e) = r {
                tracing::error!("proxy worker stopped accepting: {e}");
            }
            return;
        }
        _ = stop.wait_for(Option::is_some) => {}
    }
    let deadline = (*stop.borrow()).unwrap_or_else(Instant::now);
    while live.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::{FixedDestination, Proxy, ProxySettings};

    /// Two workers of an empty proxy with `settings`, accepting on a
    /// loopback port (connections to 127.0.0.1:9).
    fn start_two(settings: ProxySettings) -> std::io::Result<Workers> {
        let proxy = Proxy::new(&strait_config::snapshot::MeshSnapshot::default())
            .unwrap()
            .with_settings(settings);
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        proxy.serve_workers(
            listener,
            FixedDestination("127.0.0.1:9".parse().unwrap()),
            2,
        )
    }

    /// Stops `workers` and waits for their threads.
    fn stop(workers: Workers) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(workers.shutdown(Duration::ZERO));
    }

    /// Every worker thread asks for the configured slice; the thread that
    /// started them (the daemon's runtime) keeps its own.
    #[test]
    fn the_slice_request_applies_to_the_worker_threads_only() {
        let slice = Duration::from_micros(200);
        let mine = crate::serve::slice::slice_of(0).unwrap();
        let workers = start_two(ProxySettings {
            worker_slice: Some(slice),
            ..ProxySettings::default()
        })
        .unwrap();
        let tids = workers.thread_ids().to_vec();
        assert_eq!(tids.len(), 2);
        for tid in &tids {
            let got = crate::serve::slice::slice_of(*tid).unwrap();
            // Linux < 6.12 reports no slice at all (the request was
            // ignored and warned about).
            if mine.is_some() {
                assert_eq!(got, Some(slice), "worker {tid}");
            } else {
                assert_eq!(got, None);
            }
        }
        assert_eq!(crate::serve::slice::slice_of(0).unwrap(), mine);
        assert_ne!(mine, Some(slice));
        stop(workers);
    }

    /// Every worker thread takes the configured priority; the thread that
    /// started them keeps its own. (A nice value above the caller's needs
    /// no privilege; `sched.rs` tests `fifo:P`.)
    #[test]
    fn the_priority_applies_to_the_worker_threads_only() {
        let me = rustix::thread::gettid();
        let mine = rustix::process::getpriority_process(Some(me)).unwrap();
        let want = (mine + 4).min(19);
        let workers = start_two(ProxySettings {
            worker_priority: Some(crate::serve::sched::WorkerPriority::Nice(want)),
            ..ProxySettings::default()
        })
        .unwrap();
        for tid in workers.thread_ids() {
            let tid = rustix::process::Pid::from_raw(*tid).unwrap();
            assert_eq!(
                rustix::process::getpriority_process(Some(tid)).unwrap(),
                want
            );
        }
        assert_eq!(
            rustix::process::getpriority_process(Some(me)).unwrap(),
            mine
        );
        stop(workers);
    }

    /// Without `CAP_SYS_NICE` (dropped from this test thread, whose
    /// workers inherit it): a priority asked for fails the start with the
    /// flag named; the default `auto` is a warning and the workers serve in
    /// the fair class. Needs root to start with the capability.
    #[test]
    fn a_refused_priority_fails_when_asked_and_falls_back_by_default() {
        use caps::{CapSet, Capability};
        if !caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_NICE).unwrap_or(false) {
            eprintln!("skipped: not running with CAP_SYS_NICE");
            return;
        }
        std::thread::spawn(|| {
            caps::drop(None, CapSet::Effective, Capability::CAP_SYS_NICE).unwrap();
            let start = |p, required| {
                start_two(ProxySettings {
                    worker_priority: Some(p),
                    worker_priority_required: required,
                    ..ProxySettings::default()
                })
            };
            let e = start(crate::serve::sched::WorkerPriority::Fifo(1), true)
                .err()
                .expect("a refused fifo:1 must fail the start");
            assert!(e.to_string().contains("--worker-priority fifo:1"), "{e}");
            let workers = start(crate::serve::sched::WorkerPriority::Auto, false).unwrap();
            for tid in workers.thread_ids() {
                // SAFETY: sched_getscheduler(2) of a live thread.
                assert_eq!(unsafe { libc::sched_getscheduler(*tid) }, libc::SCHED_OTHER);
            }
            stop(workers);
        })
        .join()
        .unwrap();
    }
}
