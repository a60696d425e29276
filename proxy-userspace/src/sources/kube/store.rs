//! The objects a Kubernetes API server shows, kept the way a reflector keeps
//! them, with the daemon's "last good" rule per object.
//!
//! Each watched kind has the objects being served and, while the watcher
//! relists (at start, after `410 Gone`, after a disconnect it cannot resume
//! from), a buffer that replaces them atomically at `InitDone`, so a
//! half-listed kind is never served. Every object goes through the same
//! load and validation as a file's documents: an object whose new version
//! is invalid keeps its last good version (a new invalid object is left
//! out), the error names `Kind/namespace/name` and the field, and nothing
//! else is unloaded.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use std::sync::mpsc;
use strait_config::{Diagnostic, Resource};

use tokio::sync::watch;

use super::events::{EventSink, Invalid};
use crate::sources::file::{Changed, Reload, Source};

/// What the daemon's diagnostics name as the file of a Kubernetes object.
pub const ORIGIN: &str = "kube-apiserver";

/// One watcher event, the object as JSON with `apiVersion` and `kind` set
/// (kube-runtime's `watcher::Event`, untyped).
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A relist starts.
    Init,
    /// An object of the relist.
    InitApply(Value),
    /// The relist is complete: its objects replace the kind's.
    InitDone,
    /// An object was added or modified.
    Apply(Value),
    /// An object was deleted.
    Delete(Value),
}

type Key = (String, String);

#[derive(Default)]
struct KindState {
    served: BTreeMap<Key, Resource>,
    relist: Option<BTreeMap<Key, Resource>>,
    synced: bool,
}

/// The served objects of every watched kind. Shared by the watcher tasks
/// (writing) and the daemon's reload loop (reading through [`Source`]).
pub struct ObjectStore {
    kinds: BTreeMap<&'static str, KindState>,
    diagnostics: Vec<Diagnostic>,
    events: Option<EventSink>,
    wake: mpsc::Sender<()>,
    synced: watch::Sender<bool>,
    /// What changed since the last [`ObjectStore::snapshot`], object by
    /// object (`Reload::changed`); `None` when unknown (before the first
    /// snapshot, after a relist that changed what is served).
    pending: Option<Changed>,
    /// Held while a kind relists: the relist's objects share the schema
    /// trees their check needs, which are freed when no kind relists
    /// (`strait_config::schema::Scope`; issue 20: RSS per node).
    schemas: Option<strait_config::schema::Scope>,
}

impl ObjectStore {
    /// A store expecting `kinds`; `wake` gets one `()` per change of what
    /// is served. The returned receiver turns `true` once every kind has
    /// been listed completely once.
    pub fn new(kinds: &[&'static str], wake: mpsc::Sender<()>) -> (Self, watch::Receiver<bool>) {
        let (synced, rx) = watch::channel(false);
        let store = Self {
            kinds: kinds.iter().map(|k| (*k, KindState::default())).collect(),
            diagnostics: Vec::new(),
            events: None,
            wake,
            synced,
            pending: None,
            schemas: None,
        };
        (store, rx)
    }

    /// Reports every invalid object also as a Kubernetes Event against it
    /// ([`super::events`]).
    pub fn with_events(mut self, sink: EventSink) -> Self {
        self.events = Some(sink);
        self
    }

    /// Whether every kind has been listed completely once.
    pub fn synced(&self) -> bool {
        self.kinds.values().all(|k| k.synced)
    }

    /// Marks `kind` as listed with no objects without a relist: the API
    /// server does not serve it (an Istio CRD that is not installed).
    pub fn mark_absent(&mut self, kind: &'static str) {
        let st = self.kinds.entry(kind).or_default();
        if st.synced {
            return;
        }
        st.synced = true;
        let changed = !st.served.is_empty();
        st.served.clear();
        if changed {
            self.pending = None;
        }
        self.after_change(changed);
    }

    /// Applies one watcher event of `kind`.
    pub fn handle(&mut self, kind: &'static str, change: Change) {
        let st = self.kinds.entry(kind).or_default();
        let changed = match change {
            Change::Init => {
                st.relist = Some(BTreeMap::new());
                self.schemas
                    .get_or_insert_with(strait_config::schema::Scope::enter);
                false
            }
            Change::InitApply(v) => {
                let key = key_of(&v);
                let prev = st.served.get(&key).cloned();
                let res = accept(v, prev, &mut self.diagnostics, self.events.as_ref());
                if let (Some(r), Some(buf)) = (res, st.relist.as_mut()) {
                    buf.insert(key, r);
                }
                false
            }
            Change::InitDone => {
                let next = st.relist.take().unwrap_or_default();
                let changed = next != st.served || !st.synced;
                st.served = next;
                st.synced = true;
                if changed {
                    // A relist: what changed object by object is unknown.
                    self.pending = None;
                }
                changed
            }
            Change::Apply(v) => {
                let key = key_of(&v);
                let prev = st.served.get(&key).cloned();
                match accept(v, prev.clone(), &mut self.diagnostics, self.events.as_ref()) {
                    Some(r) if Some(&r) != prev.as_ref() => {
                        if let Some(p) = self.pending.as_mut() {
                            p.removed.extend(prev);
                            p.added.push(r.clone());
                        }
                        st.served.insert(key, r);
                        true
                    }
                    _ => false,
                }
            }
            Change::Delete(v) => match st.served.remove(&key_of(&v)) {
                Some(gone) => {
                    if let Some(p) = self.pending.as_mut() {
                        p.removed.push(gone);
                    }
                    true
                }
                None => false,
            },
        };
        self.after_change(changed);
    }

    fn after_change(&mut self, changed: bool) {
        if self.kinds.values().all(|k| k.relist.is_none()) {
            self.schemas = None;
        }
        if self.synced() && !*self.synced.borrow() {
            let _ = self.synced.send(true);
        }
        if changed {
            let _ = self.wake.send(());
        }
    }

    /// Every served object, with the errors found since the last call and
    /// the objects that changed since then (`Reload::changed`; `None` on
    /// the first call and after a relist changed what is served).
    pub fn snapshot(&mut self) -> Reload {
        Reload {
            resources: self
                .kinds
                .values()
                .flat_map(|k| k.served.values().cloned())
                .collect::<Vec<_>>()
                .into(),
            diagnostics: std::mem::take(&mut self.diagnostics),
            changed: self.pending.replace(Changed::default()),
            ..Reload::default()
        }
    }

    /// Served object counts per kind (for logs and tests).
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        self.kinds
            .iter()
            .map(|(k, s)| (*k, s.served.len()))
            .collect()
    }

    /// The kinds not yet listed completely.
    pub fn unsynced(&self) -> BTreeSet<&'static str> {
        self.kinds
            .iter()
            .filter(|(_, s)| !s.synced)
            .map(|(k, _)| *k)
            .collect()
    }
}

fn key_of(v: &Value) -> Key {
    let m = &v["metadata"];
    let s = |f: &str| m[f].as_str().unwrap_or_default().to_string();
    (s("namespace"), s("name"))
}

/// Loads and validates one object. Valid: the new resource. Invalid: the
/// errors are recorded (and sent to `events`) and `prev` (the last good
/// version) is kept.
fn accept(
    mut v: Value,
    prev: Option<Resource>,
    diags: &mut Vec<Diagnostic>,
    events: Option<&EventSink>,
) -> Option<Resource> {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        // Server-side bookkeeping Strait never reads.
        m.remove("managedFields");
    }
    let text = v.to_string();
    let loaded = strait_config::load::load_str(&text, ORIGIN);
    let mut errors: Vec<Diagnostic> = loaded
        .diagnostics
        .into_iter()
        .filter(Diagnostic::is_error)
        .collect();
    let mut resource = None;
    for r in loaded.resources {
        errors.extend(
            strait_config::validate::validate_resource(&r)
                .into_iter()
                .filter(Diagnostic::is_error),
        );
        resource = Some(r);
    }
    if errors.is_empty() {
        return resource;
    }
    let key = format!(
        "{}/{}/{}",
        v["kind"].as_str().unwrap_or_default(),
        v["metadata"]["namespace"].as_str().unwrap_or_default(),
        v["metadata"]["name"].as_str().unwrap_or_default()
    );
    if prev.is_some() {
        tracing::warn!(resource = %key, "invalid new version: still serving its last good version");
    } else {
        tracing::warn!(resource = %key, "invalid: not loaded");
    }
    if let Some(sink) = events {
        let kept = if prev.is_some() {
            "; its last good version keeps serving"
        } else {
            "; not loaded"
        };
        let lines: Vec<String> = errors.iter().map(event_line).collect();
        sink.report(Invalid::of(&v, format!("{}{kept}", lines.join("\n"))));
    }
    diags.extend(errors);
    prev
}

/// A diagnostic as an Event note: field and message (the origin is the API
/// server and the object is the Event's subject).
fn event_line(d: &Diagnostic) -> String {
    match &d.field {
        Some(f) => format!("{f}: {}", d.message),
        None => d.message.clone(),
    }
}

/// The daemon's view of an [`ObjectStore`] behind a mutex.
pub struct KubeStore(pub std::sync::Arc<std::sync::Mutex<ObjectStore>>);

impl Source for KubeStore {
    fn reload(&mut self) -> Reload {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .snapshot()
    }
}
