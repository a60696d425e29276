//! The pause after a failed `accept` (EMFILE/ENFILE at file-descriptor
//! exhaustion, ENOBUFS, ...) that every listener loop of the daemon shares:
//! 5 ms doubling to 1 s per consecutive failure (backon's exponential
//! back-off, no jitter), reset by the next success, so a listener that
//! stays readable while accept keeps failing costs no CPU. Envoy backs its
//! listeners off the same way instead of retrying at once.
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// First pause after a failed `accept`.
pub const MIN: Duration = Duration::from_millis(5);
/// Longest pause between failed `accept`s.
pub const MAX: Duration = Duration::from_secs(1);
/// While failures last, a warning at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The back-off state of one listener loop: call [`AcceptBackoff::accepted`]
/// after each success and await [`AcceptBackoff::failed`] after each error.
#[derive(Debug)]
pub struct AcceptBackoff {
    what: &'static str,
    delays: ExponentialBackoff,
    /// When the current run of failures last warned (`None`: no run).
    warned: Option<Instant>,
}

impl AcceptBackoff {
    /// The back-off of the listener named `what` in its log lines (e.g.
    /// "admin listener": "admin listener cannot accept; backing off").
    pub fn new(what: &'static str) -> Self {
        AcceptBackoff {
            what,
            delays: Self::delays(),
            warned: None,
        }
    }

    fn delays() -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(MIN)
            .with_max_delay(MAX)
            .with_factor(2.0)
            .without_max_times()
            .build()
    }

    /// A connection was accepted: the next failure starts again at [`MIN`]
    /// (logged at info when it ends a run of failures).
    pub fn accepted(&mut self) {
        if self.warned.take().is_some() {
            self.delays = Self::delays();
            tracing::info!("{} accepting again", self.what);
        }
    }

    /// `accept` failed with `e`: warns (at the start of a run of failures
    /// and every 10 s while it lasts) and sleeps the next pause.
    pub async fn failed(&mut self, e: &std::io::Error) {
        let pause = self.next_pause();
        if self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            self.warned = Some(Instant::now());
            tracing::warn!(
                error = %e,
                retry_in_ms = pause.as_millis() as u64,
                "{} cannot accept; backing off",
                self.what
            );
        }
        tokio::time::sleep(pause).await;
    }

    fn next_pause(&mut self) -> Duration {
        self.delays.next().unwrap_or(MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pauses_double_to_a_second_and_restart_after_a_success() {
        let mut b = AcceptBackoff::new("test listener");
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        let t = Instant::now();
        b.failed(&e).await;
        assert!(t.elapsed() >= MIN);
        // backon multiplies in f32: 39.99... ms for 40.
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0).round() as u64;
        let rest: Vec<u64> = (0..9).map(|_| ms(b.next_pause())).collect();
        assert_eq!(rest, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.accepted();
        assert_eq!(b.next_pause(), MIN, "a success starts again at 5 ms");
        assert_eq!(ms(b.next_pause()), 10);
    }
}
