//! One shared copy of the strings that repeat across endpoints.
//!
//! 10^5 endpoints carry a handful of distinct namespaces, service accounts
//! and localities; each is stored once as an `Arc<str>` and the endpoints
//! of every cluster point at it (serialised exactly like a `String`).
use std::collections::HashSet;
use std::sync::Arc;

/// A set of shared strings.
#[derive(Default)]
pub(crate) struct Interner(HashSet<Arc<str>>);

impl Interner {
    /// The shared copy of `s`.
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }
}
