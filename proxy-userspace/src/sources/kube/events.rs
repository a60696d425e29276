//! Invalid resources reported as Kubernetes Events against the object
//! (`kubectl describe virtualservice reviews` shows them), besides the log,
//! with kube-runtime's [`Recorder`] (events.k8s.io/v1; repeats of the same
//! event within its cache become a series).
//!
//! Rate limits, so that hostile or broken input cannot flood the API
//! server or grow memory: the same (object, message) is posted at most
//! once per [`REPEAT_EVERY`]; at most [`BURST`] Events at once and
//! [`PER_SECOND`] per second after that across all objects; at most
//! [`QUEUE`] waiting (more are dropped and counted in the log). Event
//! type `Warning`, reason `InvalidConfiguration`, action `Validate`,
//! reporting controller `strait` with the node name as instance.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::Value;
use tokio::sync::mpsc;

/// The same (object, message) is posted again only after this long.
pub const REPEAT_EVERY: Duration = Duration::from_secs(300);
/// Events posted at once before the per-second rate applies.
pub const BURST: u32 = 25;
/// Events per second after the burst.
pub const PER_SECOND: u32 = 5;
/// Events waiting to be posted; more are dropped.
pub const QUEUE: usize = 1024;
/// The Event's reason.
pub const REASON: &str = "InvalidConfiguration";
/// Longest note (the API server's limit is 1 kB).
const MAX_NOTE: usize = 1000;

/// One invalid object to report.
#[derive(Clone, Debug, PartialEq)]
pub struct Invalid {
    /// The object (apiVersion, kind, namespace, name, uid, resourceVersion).
    pub regarding: ObjectReference,
    /// What is wrong (the diagnostics, one per line; never secret data).
    pub message: String,
}

impl Invalid {
    /// The report of `object` (as the API server sent it) with `message`.
    pub fn of(object: &Value, message: String) -> Self {
        let m = &object["metadata"];
        let s = |v: &Value| v.as_str().map(String::from);
        Invalid {
            regarding: ObjectReference {
                api_version: s(&object["apiVersion"]),
                kind: s(&object["kind"]),
                namespace: s(&m["namespace"]),
                name: s(&m["name"]),
                uid: s(&m["uid"]),
                resource_version: s(&m["resourceVersion"]),
                ..Default::default()
            },
            message,
        }
    }
}

/// Where the store sends invalid objects (never blocks; a full queue drops).
#[derive(Clone)]
pub struct EventSink(mpsc::Sender<Invalid>);

impl EventSink {
    /// Queues `inv` for reporting; dropped (with a debug log) when the
    /// queue is full.
    pub fn report(&self, inv: Invalid) {
        if self.0.try_send(inv).is_err() {
            tracing::debug!("Event queue full: an invalid-resource Event was dropped");
        }
    }
}

/// A token bucket: `burst` at once, then `per_second`.
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() * f64::from(PER_SECOND);
        self.tokens = (self.tokens + refill).min(f64::from(BURST));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Decides which reports are posted.
pub struct Limiter {
    seen: HashMap<(String, String, String, String), Instant>,
    bucket: Bucket,
}

impl Default for Limiter {
    fn default() -> Self {
        Self {
            seen: HashMap::new(),
            bucket: Bucket {
                tokens: f64::from(BURST),
                last: Instant::now(),
            },
        }
    }
}

impl Limiter {
    /// Whether `inv` is posted at `now`.
    pub fn allow(&mut self, inv: &Invalid, now: Instant) -> bool {
        let r = &inv.regarding;
        let key = (
            r.kind.clone().unwrap_or_default(),
            r.namespace.clone().unwrap_or_default(),
            r.name.clone().unwrap_or_default(),
            inv.message.clone(),
        );
        if self
            .seen
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < REPEAT_EVERY)
        {
            return false;
        }
        if !self.bucket.take(now) {
            return false;
        }
        self.seen
            .retain(|_, t| now.duration_since(*t) < REPEAT_EVERY);
        self.seen.insert(key, now);
        true
    }
}

fn note(message: &str) -> String {
    if message.len() <= MAX_NOTE {
        return message.to_string();
    }
    let mut end = MAX_NOTE - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// Starts the reporter on the current runtime: Events are posted with
/// `client` as controller `strait`, instance `node`. Returns where to send
/// invalid objects and the task (abort it to stop).
pub fn start(client: kube::Client, node: &str) -> (EventSink, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "strait".into(),
            instance: Some(node.to_string()),
        },
    );
    (EventSink(tx), tokio::spawn(run(recorder, rx)))
}

async fn run(recorder: Recorder, mut rx: mpsc::Receiver<Invalid>) {
    let mut limiter = Limiter::default();
    let mut skipped = 0u64;
    while let Some(inv) = rx.recv().await {
        if !limiter.allow(&inv, Instant::now()) {
            skipped += 1;
            continue;
        }
        let ev = Event {
            type_: EventType::Warning,
            reason: REASON.into(),
            note: Some(note(&inv.message)),
            action: "Validate".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &inv.regarding).await {
            tracing::warn!(
                kind = ?inv.regarding.kind, name = ?inv.regarding.name,
                "posting the invalid-resource Event failed: {e}"
            );
        } else {
            tracing::debug!(kind = ?inv.regarding.kind, name = ?inv.regarding.name, skipped, "invalid-resource Event posted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(name: &str, msg: &str) -> Invalid {
        Invalid::of(
            &serde_json::json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": name, "namespace": "default", "uid": "u1"}}),
            msg.into(),
        )
    }

    #[test]
    fn the_same_report_is_posted_once_per_five_minutes_and_a_flood_is_capped() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        assert!(l.allow(&inv("a", "bad"), t0));
        assert!(!l.allow(&inv("a", "bad"), t0 + Duration::from_secs(60)));
        assert!(l.allow(&inv("a", "worse"), t0), "a new message is news");
        assert!(l.allow(&inv("a", "bad"), t0 + REPEAT_EVERY));
        // 1,000 distinct invalid objects at once: the burst, then the rate.
        let mut l = Limiter::default();
        let posted = (0..1000)
            .filter(|i| l.allow(&inv(&format!("vs-{i}"), "bad"), t0))
            .count();
        assert_eq!(posted, BURST as usize);
        let later = (1000..1100)
            .filter(|i| l.allow(&inv(&format!("vs-{i}"), "bad"), t0 + Duration::from_secs(2)))
            .count();
        assert_eq!(later, 2 * PER_SECOND as usize);
    }

    #[test]
    fn long_notes_are_cut_at_a_character_boundary() {
        let n = note(&"é".repeat(800));
        assert!(n.len() <= MAX_NOTE && n.ends_with("..."));
    }
}
