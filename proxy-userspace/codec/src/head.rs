//! The request head as the pipeline sees it ([`ReqHead`]), with headers in
//! one of two forms ([`ReqHeaders`]): hyper's `HeaderMap` (HTTP/2 and the
//! connections hyper serves), or, for requests Strait's own HTTP/1.1 server
//! read, the received head bytes and where each header sits in them
//! ([`RawHeaders`]).
//!
//! Most requests are only read (route match, hash keys) and forwarded with
//! a few headers added (`x-request-id`, `x-forwarded-proto`): the raw form
//! skips building a map of the client's headers and writes them upstream
//! in one copy. The first change it cannot express (replacing a header the
//! client sent, route header operations) turns it into a `HeaderMap`.
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

use crate::h1::spans::header_value;

/// A request head: what `http::request::Parts` holds, with [`ReqHeaders`].
#[derive(Debug)]
pub struct ReqHead {
    /// Method.
    pub method: Method,
    /// Request target: origin form (path and query) for HTTP/1.1, absolute
    /// (with `:authority`) for HTTP/2.
    pub uri: Uri,
    /// Protocol version the client spoke.
    pub version: Version,
    /// Headers.
    pub headers: ReqHeaders,
    /// hyper's extensions (the WebSocket upgrade handle); empty otherwise.
    pub extensions: http::Extensions,
}

impl From<http::request::Parts> for ReqHead {
    fn from(p: http::request::Parts) -> Self {
        Self {
            method: p.method,
            uri: p.uri,
            version: p.version,
            headers: ReqHeaders::Map(p.headers),
            extensions: p.extensions,
        }
    }
}

/// Request headers, in either form. Lookups take lower-case
/// [`HeaderName`]s and compare ASCII case-insensitively (RFC 9110 §5.1);
/// a name's first value is the one `HeaderMap::get` would return.
#[derive(Debug)]
pub enum ReqHeaders {
    /// A header map.
    Map(HeaderMap),
    /// The client's bytes, plus the proxy's additions.
    Raw(RawHeaders),
}

impl Default for ReqHeaders {
    fn default() -> Self {
        Self::Map(HeaderMap::new())
    }
}

/// Headers left in the HTTP/1.1 head they were read from.
#[derive(Debug)]
pub struct RawHeaders {
    /// The request head as received, request line to the blank line.
    head: bytes::Bytes,
    /// Per header in order: name start, name end, value start, value end
    /// (byte offsets into `head`).
    spans: Vec<[u32; 4]>,
    /// Bit `i` set: `spans[i]` was removed.
    removed: u64,
    /// Every line is `name: value\r\n` with a lower-case name and the lines
    /// are contiguous, so they can be copied upstream as they are.
    verbatim: bool,
    /// Headers the proxy added, sent after the client's.
    added: Vec<(HeaderName, HeaderValue)>,
}

/// Most headers a [`RawHeaders`] holds (the width of `removed`).
pub const MAX_RAW: usize = 64;

impl RawHeaders {
    /// Headers at `spans` of `head`, which `httparse` parsed (so names are
    /// tokens and values hold only bytes `HeaderValue` accepts).
    ///
    /// # Panics
    /// With more than [`MAX_RAW`] spans.
    pub fn new(head: bytes::Bytes, spans: Vec<[u32; 4]>) -> Self {
        assert!(spans.len() <= MAX_RAW, "at most {MAX_RAW} raw headers");
        let mut next = spans.first().map_or(0, |s| s[0] as usize);
        let verbatim = spans.iter().all(|&[ns, ne, vs, ve]| {
            let (ns, ne, vs, ve) = (ns as usize, ne as usize, vs as usize, ve as usize);
            let line = ns == next
                && vs == ne + 2
                && head.get(ne..vs) == Some(b": ")
                && head.get(ve..ve + 2) == Some(b"\r\n")
                && !head[ns..ne].iter().any(u8::is_ascii_uppercase);
            next = ve + 2;
            line
        });
        Self {
            head,
            spans,
            removed: 0,
            verbatim,
            added: Vec::new(),
        }
    }

    fn name(&self, i: usize) -> &[u8] {
        let [ns, ne, _, _] = self.spans[i];
        &self.head[ns as usize..ne as usize]
    }

    fn value(&self, i: usize) -> &[u8] {
        let [_, _, vs, ve] = self.spans[i];
        &self.head[vs as usize..ve as usize]
    }

    /// Indexes of the client's headers named `name`, not removed.
    fn positions<'s, 'n>(
        &'s self,
        name: &'n HeaderName,
    ) -> impl Iterator<Item = usize> + use<'s, 'n> {
        let want = name.as_str().as_bytes();
        (0..self.spans.len()).filter(move |&i| {
            self.removed & (1 << i) == 0 && self.name(i).eq_ignore_ascii_case(want)
        })
    }

    /// The values of `name`: the client's, then the proxy's.
    fn values<'s, 'n>(
        &'s self,
        name: &'n HeaderName,
    ) -> impl Iterator<Item = &'s [u8]> + use<'s, 'n> {
        let added = self.added.iter().filter(move |(n, _)| n == name);
        self.positions(name)
            .map(|i| self.value(i))
            .chain(added.map(|(_, v)| v.as_bytes()))
    }

    fn to_map(&self) -> HeaderMap {
        let mut m = HeaderMap::with_capacity(self.spans.len() + self.added.len());
        for (i, &[_, _, vs, ve]) in self.spans.iter().enumerate() {
            if self.removed & (1 << i) != 0 {
                continue;
            }
            // `httparse` accepted the name as a token, which `HeaderName`
            // accepts too (lower-casing it).
            if let Ok(n) = HeaderName::from_bytes(self.name(i)) {
                m.append(n, header_value(&self.head, vs as usize..ve as usize));
            }
        }
        for (n, v) in &self.added {
            m.append(n.clone(), v.clone());
        }
        m
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match (self.spans.first(), self.spans.last()) {
            (Some(first), Some(last)) if self.verbatim && self.removed == 0 => {
                out.extend_from_slice(&self.head[first[0] as usize..last[3] as usize + 2]);
            }
            _ => {
                for i in 0..self.spans.len() {
                    if self.removed & (1 << i) == 0 {
                        // Lower-case names, as Envoy sends them.
                        let start = out.len();
                        out.extend_from_slice(self.name(i));
                        out[start..].make_ascii_lowercase();
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(self.value(i));
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
        }
        for (n, v) in &self.added {
            crate::h1::request::header_line(out, n.as_str().as_bytes(), v.as_bytes());
        }
    }
}

/// `HeaderValue::to_str`'s rule: visible ASCII, space and tab only.
fn visible_str(b: &[u8]) -> Option<&str> {
    if b.iter().all(|&c| c == b'\t' || (0x20..0x7f).contains(&c)) {
        std::str::from_utf8(b).ok()
    } else {
        None
    }
}

impl ReqHeaders {
    /// The first value of `name`.
    pub fn get_bytes(&self, name: &HeaderName) -> Option<&[u8]> {
        match self {
            Self::Map(m) => m.get(name).map(HeaderValue::as_bytes),
            Self::Raw(r) => r.values(name).next(),
        }
    }

    /// The first value of `name`, when it is visible ASCII (as
    /// `HeaderValue::to_str`).
    pub fn get_str(&self, name: &HeaderName) -> Option<&str> {
        self.get_bytes(name).and_then(visible_str)
    }

    /// The first value of `name` as a `HeaderValue` (sharing the head's
    /// bytes, no copy).
    pub fn get_value(&self, name: &HeaderName) -> Option<HeaderValue> {
        match self {
            Self::Map(m) => m.get(name).cloned(),
            Self::Raw(r) => match r.positions(name).next() {
                Some(i) => {
                    let [_, _, vs, ve] = r.spans[i];
                    Some(header_value(&r.head, vs as usize..ve as usize))
                }
                None => r
                    .added
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone()),
            },
        }
    }

    /// The first `Some` that `f` returns over the values of `name`, in
    /// order (for headers that repeat, such as `cookie`).
    pub fn find_map_all<'a, T>(
        &'a self,
        name: &HeaderName,
        mut f: impl FnMut(&'a [u8]) -> Option<T>,
    ) -> Option<T> {
        match self {
            Self::Map(m) => m.get_all(name).iter().find_map(|v| f(v.as_bytes())),
            Self::Raw(r) => r.values(name).find_map(f),
        }
    }

    /// Whether `name` is present.
    pub fn contains_key(&self, name: &HeaderName) -> bool {
        self.get_bytes(name).is_some()
    }

    /// Replaces every value of `name` with `value`. The raw form keeps its
    /// bytes when the client did not send `name`.
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        if let Self::Raw(r) = self {
            if r.positions(&name).next().is_none() {
                r.added.retain(|(n, _)| *n != name);
                r.added.push((name, value));
                return;
            }
        }
        self.map_mut().insert(name, value);
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &HeaderName) {
        match self {
            Self::Map(m) => {
                m.remove(name);
            }
            Self::Raw(r) => {
                let gone: u64 = r.positions(name).fold(0, |m, i| m | 1 << i);
                r.removed |= gone;
                r.added.retain(|(n, _)| n != name);
            }
        }
    }

    /// The headers as a map, built from the raw form on first use.
    pub fn map_mut(&mut self) -> &mut HeaderMap {
        if let Self::Raw(r) = self {
            *self = Self::Map(r.to_map());
        }
        match self {
            Self::Map(m) => m,
            Self::Raw(_) => unreachable!("replaced above"),
        }
    }

    /// A copy as a map.
    pub fn to_map(&self) -> HeaderMap {
        match self {
            Self::Map(m) => m.clone(),
            Self::Raw(r) => r.to_map(),
        }
    }

    /// The headers as a map.
    pub fn into_map(self) -> HeaderMap {
        match self {
            Self::Map(m) => m,
            Self::Raw(r) => r.to_map(),
        }
    }

    /// Appends `name: value\r\n` per header (HTTP/1.1 wire form; the raw
    /// form in one copy when nothing was removed).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Map(m) => {
                for (n, v) in m {
                    crate::h1::request::header_line(out, n.as_str().as_bytes(), v.as_bytes());
                }
            }
            Self::Raw(r) => r.encode(out),
        }
    }

    /// Removes the connection-specific headers a proxy must not forward
    /// (RFC 9110 §7.6.1), except the upgrade pair on a WebSocket handshake
    /// and `te: trailers`.
    pub fn strip_hop_by_hop(&mut self, upgrade: bool) {
        // Most messages carry none: one pass over the names instead of a
        // lookup per header that might be there.
        let any = match self {
            Self::Map(m) => m.keys().any(|n| HOP_BY_HOP.contains(&n.as_str())),
            Self::Raw(r) => (0..r.spans.len()).any(|i| {
                let n = r.name(i);
                HOP_BY_HOP
                    .iter()
                    .any(|h| n.eq_ignore_ascii_case(h.as_bytes()))
            }),
        };
        if !any {
            return;
        }
        if !upgrade {
            self.remove(&http::header::CONNECTION);
            self.remove(&http::header::UPGRADE);
        }
        self.remove(&KEEP_ALIVE);
        self.remove(&PROXY_CONNECTION);
        self.remove(&http::header::TRANSFER_ENCODING);
        if self
            .get_bytes(&http::header::TE)
            .is_some_and(|v| v != b"trailers")
        {
            self.remove(&http::header::TE);
        }
    }
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "upgrade",
    "transfer-encoding",
    "te",
    "keep-alive",
    "proxy-connection",
];

#[cfg(test)]
mod tests;
