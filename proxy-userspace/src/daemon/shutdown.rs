//! SIGTERM and SIGINT: the daemon's stop request, never lost and never
//! fatal.
//!
//! Without a handler, either signal kills the process. `strait run` once
//! installed tokio's handler only after `/ready` said ready, so a SIGTERM
//! sent as soon as the node was ready (a rolling update, a test) could
//! kill the daemon with the signal instead of draining (exit status
//! "signal 15"; `kernel_upgrade`'s uplink restart test failed so under
//! load). Now:
//!
//! 1. [`block_stop_signals`] blocks both on the main thread before setup
//!    (the threads started later inherit the mask): a signal that arrives
//!    while programs are attached and maps written stays pending, so a
//!    start is never cut halfway.
//! 2. [`Shutdown::install`] installs the handlers once the runtime is up,
//!    before anything serves; [`unblock_stop_signals`] then lets a pending
//!    signal through, to the handler.
//! 3. The daemon waits for [`Shutdown::recv`] (during start-up too: see
//!    `daemon::serve`) and drains.
//!
//! ztunnel installs its shutdown trigger at the start of `main` the same
//! way (`signal::Shutdown::new`); Envoy handles SIGTERM from its first
//! event loop on.
use anyhow::Context;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use tokio::signal::unix::{signal, SignalKind};

/// SIGTERM and SIGINT.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// Blocks SIGTERM and SIGINT on the calling thread (and the threads it
/// starts from now on): they stay pending until [`unblock_stop_signals`].
///
/// Errors: `pthread_sigmask` failed (never with these arguments).
pub fn block_stop_signals() -> anyhow::Result<()> {
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stop_signals()), None)
        .context("blocking SIGTERM/SIGINT during start-up")
}

/// Unblocks SIGTERM and SIGINT on the calling thread; a pending one is
/// delivered now. Call it after [`Shutdown::install`], on the thread that
/// blocked them (the runtime's worker threads keep them blocked, so the
/// signal goes to this thread's handler).
///
/// Errors: `pthread_sigmask` failed (never with these arguments).
pub fn unblock_stop_signals() -> anyhow::Result<()> {
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&stop_signals()), None)
        .context("unblocking SIGTERM/SIGINT")
}

/// The stop request: SIGTERM or SIGINT, each recorded from
/// [`Self::install`] on (a signal before the first [`Self::recv`] is not
/// lost).
#[derive(Debug)]
pub struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the handlers (process-wide, for the rest of its life).
    /// Must run inside a tokio runtime with its IO driver.
    ///
    /// Errors: no runtime, or the handler could not be registered.
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Resolves once SIGTERM or SIGINT has arrived since [`Self::install`]
    /// (at once when one already has).
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }

    /// [`Self::recv`], consuming: a future to hand to a server.
    pub async fn wait(mut self) {
        self.recv().await
    }
}
