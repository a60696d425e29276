//! Watches the config directory and wakes the reload loop.
//!
//! File events are debounced (editors write a file in several steps, and a
//! `kubectl`-style apply may touch several files), so one burst of changes
//! triggers one recompile.
use std::path::Path;
use std::time::Duration;

use notify_debouncer_mini::{new_debouncer, notify::RecursiveMode, DebounceEventResult, Debouncer};
use tokio::sync::mpsc;

/// Debounce window for file events, milliseconds. Small enough that a change
/// takes effect well under a second.
pub const DEBOUNCE_MS: u64 = 100;

/// A live watch; dropping it stops watching.
pub struct ConfigWatch {
    _debouncer: Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>,
}

/// Watches `dir` recursively; every debounced burst of changes sends one
/// `()` on the returned channel.
///
/// Errors: the directory does not exist or inotify cannot watch it.
pub fn watch(dir: &Path) -> anyhow::Result<(ConfigWatch, mpsc::UnboundedReceiver<()>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut debouncer = new_debouncer(
        Duration::from_millis(DEBOUNCE_MS),
        move |res: DebounceEventResult| match res {
            Ok(events) if !events.is_empty() => {
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "config watch error"),
        },
    )?;
    debouncer
        .watcher()
        .watch(dir, RecursiveMode::Recursive)
        .map_err(|e| anyhow::anyhow!("cannot watch config directory {}: {e}", dir.display()))?;
    Ok((
        ConfigWatch {
            _debouncer: debouncer,
        },
        rx,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_change_wakes_the_watcher_within_a_second_then_it_goes_quiet() {
        let dir = std::env::temp_dir().join(format!("strait-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (_w, mut rx) = watch(&dir).unwrap();
        let t0 = std::time::Instant::now();
        for i in 0..5 {
            std::fs::write(dir.join("vs.yaml"), format!("# {i}\n")).unwrap();
        }
        let woke = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
        assert!(
            matches!(woke, Ok(Some(()))),
            "no wake-up within 1 s of writing a file"
        );
        assert!(t0.elapsed() < Duration::from_secs(1));
        // The burst may span a debounce tick or two, never more: then quiet.
        tokio::time::sleep(Duration::from_millis(5 * DEBOUNCE_MS)).await;
        while rx.try_recv().is_ok() {}
        let again = tokio::time::timeout(Duration::from_millis(3 * DEBOUNCE_MS), rx.recv()).await;
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(again.is_err(), "the watcher keeps waking up with no change");
    }
}
