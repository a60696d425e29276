//! Watches the config directory and wakes the reload loop.
//!
//! Only events that can change what a reload reads wake it: writes (and
//! the close after a write), creations, removals, renames and permission or
//! ownership changes. Opens, reads and closes after reading
//! (`EventKind::Access` other than close-after-write) are ignored: the
//! reload's own reads of the directory would otherwise wake the next reload,
//! forever. Events are debounced (editors write a file in several steps,
//! and a `kubectl`-style apply may touch several files), so one burst of
//! changes triggers one reload.
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use crate::sources::ChangedPaths;

/// Debounce window for file events, milliseconds: a burst ends once no
/// event arrived for this long. Small enough that a change takes effect
/// well under a second.
pub const DEBOUNCE_MS: u64 = 100;

/// Longest a burst of changes may delay a reload (a file rewritten
/// continuously still reloads this often).
pub const MAX_DELAY_MS: u64 = 1000;

/// A live watch; dropping it stops watching.
pub struct ConfigWatch {
    _watcher: RecommendedWatcher,
}

/// Whether an event of `kind` can change the directory's content.
pub fn is_content_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(m)) => {
            !matches!(m, MetadataKind::AccessTime | MetadataKind::Extended)
        }
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any | EventKind::Other => false,
    }
}

/// Watches `dir` recursively; every content change notes its paths in
/// `paths` (so the store re-reads only those files, see
/// [`crate::sources::ConfigStore::follow`]) and then sends one `()` on the
/// returned channel (use [`next_burst`] to wait for a debounced burst).
///
/// Errors: the directory does not exist or inotify cannot watch it.
pub fn watch(dir: &Path, paths: ChangedPaths) -> anyhow::Result<(ConfigWatch, mpsc::Receiver<()>)> {
    let (tx, rx) = mpsc::channel();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            // The kernel's queue overflowed: changes were lost.
            Ok(ev) if ev.need_rescan() => {
                tracing::warn!("config watch lost events: reading the whole directory");
                paths.note_unknown();
                let _ = tx.send(());
            }
            Ok(ev) if is_content_change(&ev.kind) => {
                paths.note(&ev.paths);
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "config watch error");
                // An overflowed queue may have lost changes: read
                // everything.
                paths.note_unknown();
                let _ = tx.send(());
            }
        })?;
    watcher
        .watch(dir, RecursiveMode::Recursive)
        .map_err(|e| anyhow::anyhow!("cannot watch config directory {}: {e}", dir.display()))?;
    Ok((ConfigWatch { _watcher: watcher }, rx))
}

/// Blocks until a change arrives, then until [`DEBOUNCE_MS`] pass without
/// one (at most [`MAX_DELAY_MS`] in all). `false` when the watch is gone.
pub fn next_burst(rx: &mpsc::Receiver<()>) -> bool {
    if rx.recv().is_err() {
        return false;
    }
    let until = Instant::now() + Duration::from_millis(MAX_DELAY_MS);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(Duration::from_millis(DEBOUNCE_MS).min(left)) {
            Ok(()) if !left.is_zero() => continue,
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => return true,
            Err(mpsc::RecvTimeoutError::Disconnected) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_wake_the_watcher_once_per_burst_and_reads_never_do() {
        let dir = std::env::temp_dir().join(format!("strait-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vs.yaml"), "# 0\n").unwrap();
        let (_w, rx) = watch(&dir, ChangedPaths::default()).unwrap();
        let (tx, bursts) = mpsc::channel();
        std::thread::spawn(move || {
            while next_burst(&rx) {
                let _ = tx.send(Instant::now());
            }
        });
        let t0 = Instant::now();
        for i in 0..5 {
            std::fs::write(dir.join("vs.yaml"), format!("# {i}\n")).unwrap();
        }
        let woke = bursts.recv_timeout(Duration::from_secs(5));
        assert!(woke.is_ok(), "no wake-up after writing a file");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        // What a reload does: list, open, read, close. None of it wakes.
        std::thread::sleep(Duration::from_millis(3 * DEBOUNCE_MS));
        while bursts.try_recv().is_ok() {}
        for _ in 0..20 {
            let _ = std::fs::read_dir(&dir).unwrap().count();
            let _ = std::fs::read_to_string(dir.join("vs.yaml")).unwrap();
        }
        let again = bursts.recv_timeout(Duration::from_millis(5 * DEBOUNCE_MS));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(again.is_err(), "reading the config woke the watcher");
    }

    #[test]
    fn access_events_other_than_close_after_write_are_ignored() {
        use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};
        assert!(!is_content_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_content_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_content_change(&EventKind::Access(AccessKind::Read)));
        assert!(is_content_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_content_change(&EventKind::Create(CreateKind::File)));
        assert!(is_content_change(&EventKind::Remove(RemoveKind::File)));
        assert!(is_content_change(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(is_content_change(&EventKind::Modify(ModifyKind::Name(
            RenameMode::Both
        ))));
    }
}
