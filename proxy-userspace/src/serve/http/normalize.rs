//! Request path normalization before route (and policy) matching, as
//! Istio's `MeshConfig.pathNormalization.normalization` configures Envoy
//! (`normalize_path`, `merge_slashes`, `path_with_escaped_slashes_action`;
//! see istio.io "Authorization Policy Normalization"):
//!
//! - `NONE`: the path as received.
//! - `BASE` (Istio's default): RFC 3986 §6.2.2 normalization — percent-
//!   encoded unreserved characters (`ALPHA DIGIT - . _ ~`) decoded, other
//!   escapes kept with upper-case hex, `\` turned into `/` — then the `.`
//!   and `..` segments removed (§5.2.4). `/a/%2e%2e/b` → `/b`.
//! - `MERGE_SLASHES`: `BASE`, then runs of `/` merged into one.
//! - `DECODE_AND_MERGE_SLASHES`: `%2F`/`%5C` decoded to `/` first
//!   (Envoy's `UNESCAPE_AND_FORWARD`), then `MERGE_SLASHES`.
//!
//! A `%` that starts no valid escape becomes `%25`, so normalizing twice
//! changes nothing. `%00` in a path is always refused (Envoy answers 400). The query is left
//! as it is. The normalized path is what routes match and what the upstream
//! receives.
use std::sync::atomic::{AtomicU8, Ordering};

/// Istio's `MeshConfig.ProxyPathNormalization.NormalizationType`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum PathNormalization {
    /// No normalization.
    None = 0,
    /// RFC 3986 normalization (Istio's default).
    #[default]
    Base = 1,
    /// `Base`, then merged slashes.
    MergeSlashes = 2,
    /// `%2F`/`%5C` decoded, then `MergeSlashes`.
    DecodeAndMergeSlashes = 3,
}

impl PathNormalization {
    /// From Istio's YAML name (`NONE`, `BASE`, `MERGE_SLASHES`,
    /// `DECODE_AND_MERGE_SLASHES`; `DEFAULT` is `BASE`); `None` for any
    /// other string.
    pub fn from_istio(name: &str) -> Option<Self> {
        Some(match name {
            "NONE" => Self::None,
            "BASE" | "DEFAULT" => Self::Base,
            "MERGE_SLASHES" => Self::MergeSlashes,
            "DECODE_AND_MERGE_SLASHES" => Self::DecodeAndMergeSlashes,
            _ => return None,
        })
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::None,
            2 => Self::MergeSlashes,
            3 => Self::DecodeAndMergeSlashes,
            _ => Self::Base,
        }
    }
}

/// A [`PathNormalization`] that can be changed while the proxy serves (a
/// mesh config reload): one relaxed atomic load per request.
#[derive(Debug)]
pub struct PathNormalizationCell(AtomicU8);

impl PathNormalizationCell {
    /// Holding `n`.
    pub fn new(n: PathNormalization) -> Self {
        Self(AtomicU8::new(n as u8))
    }

    /// The current setting.
    pub fn get(&self) -> PathNormalization {
        PathNormalization::from_u8(self.0.load(Ordering::Relaxed))
    }

    /// Replaces the setting; requests that start afterwards use it.
    pub fn set(&self, n: PathNormalization) {
        self.0.store(n as u8, Ordering::Relaxed);
    }
}

impl Default for PathNormalizationCell {
    fn default() -> Self {
        Self::new(PathNormalization::default())
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// `%00` (an encoded NUL) in the path.
    #[error("encoded NUL in the request path")]
    EncodedNul,
}

/// The normalized form of `path_and_query` under `mode`: `Ok(None)` when it
/// is already normal (the common case: one scan, no allocation).
///
/// Errors: [`NormalizeError::EncodedNul`].
pub fn normalize(
    path_and_query: &str,
    mode: PathNormalization,
) -> Result<Option<String>, NormalizeError> {
    if mode == PathNormalization::None {
        return Ok(None);
    }
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    let merge = mode != PathNormalization::Base;
    if !needs_work(path.as_bytes(), merge) {
        return Ok(None);
    }
    let decoded = decode(
        path.as_bytes(),
        mode == PathNormalization::DecodeAndMergeSlashes,
    )?;
    let mut out = remove_dot_segments(&decoded);
    if merge {
        out.dedup_by(|a, b| *a == b'/' && *b == b'/');
    }
    if out.is_empty() || out[0] != b'/' {
        out.insert(0, b'/');
    }
    out.extend_from_slice(query.as_bytes());
    // Only ASCII went in, and only ASCII or whole input bytes come out.
    let s = String::from_utf8(out).expect("normalized path stays UTF-8");
    Ok((s != path_and_query).then_some(s))
}

/// Whether `path` holds anything normalization may change.
fn needs_work(path: &[u8], merge: bool) -> bool {
    if path.first() != Some(&b'/') {
        return true;
    }
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' | b'\\' => return true,
            // A `.` or `..` segment (a dot inside a name is fine).
            b'.' if path[i - 1] == b'/' => {
                let rest = &path[i + 1..];
                let rest = rest.strip_prefix(b".").unwrap_or(rest);
                if rest.is_empty() || rest[0] == b'/' {
                    return true;
                }
            }
            b'/' if merge && i > 0 && path[i - 1] == b'/' => return true,
            _ => {}
        }
    }
    false
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-decoding of unreserved characters (and of `/` `\` when
/// `slashes`), upper-case hex for the escapes kept, `\` → `/`.
fn decode(path: &[u8], slashes: bool) -> Result<Vec<u8>, NormalizeError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%' && i + 2 < path.len() {
            if let (Some(h), Some(l)) = (hex(path[i + 1]), hex(path[i + 2])) {
                let v = h * 16 + l;
                if v == 0 {
                    return Err(NormalizeError::EncodedNul);
                }
                if is_unreserved(v) {
                    out.push(v);
                } else if slashes && (v == b'/' || v == b'\\') {
                    out.push(b'/');
                } else {
                    out.push(b'%');
                    out.push(path[i + 1].to_ascii_uppercase());
                    out.push(path[i + 2].to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        match b {
            b'\\' => out.push(b'/'),
            // A `%` that starts no escape is a literal one: encoded, so that
            // normalizing again changes nothing (no double decoding).
            b'%' => out.extend_from_slice(b"%25"),
            _ => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 on an absolute path: `.` segments dropped, `..`
/// removes the segment before it (never above the root).
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    // Segments after the leading `/`; the last one has no `/` after it.
    let body = path.strip_prefix(b"/").unwrap_or(path);
    let mut segs = body.split(|&b| b == b'/').peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        match seg {
            b"." => {
                if last {
                    out.push(b'/');
                }
            }
            b".." => {
                // Drop the last output segment (and its `/`).
                match out.iter().rposition(|&b| b == b'/') {
                    Some(p) => out.truncate(p),
                    None => out.clear(),
                }
                if last {
                    out.push(b'/');
                }
            }
            _ => {
                out.push(b'/');
                out.extend_from_slice(seg);
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::PathNormalization::*;
    use super::*;

    fn n(p: &str, m: PathNormalization) -> String {
        normalize(p, m).unwrap().unwrap_or_else(|| p.to_owned())
    }

    #[test]
    fn base_resolves_dots_and_decodes_unreserved() {
        assert_eq!(n("/public/../admin/x", Base), "/admin/x");
        assert_eq!(n("/public/%2e%2e/admin/x", Base), "/admin/x");
        assert_eq!(n("/public/%2E%2E/admin/x", Base), "/admin/x");
        assert_eq!(n("/public/./../admin/x", Base), "/admin/x");
        assert_eq!(n("/a/./b/.", Base), "/a/b/");
        assert_eq!(n("/a/b/..", Base), "/a/");
        assert_eq!(n("/../../x", Base), "/x");
        assert_eq!(n("/..", Base), "/");
        assert_eq!(n("/%41%7e%2D%5f", Base), "/A~-_");
        assert_eq!(n("/a%2fb", Base), "/a%2Fb");
        assert_eq!(n("/a\\b", Base), "/a/b");
        assert_eq!(n("/a//b", Base), "/a//b");
        assert_eq!(n("/a/../b?x=/../y", Base), "/b?x=/../y");
        assert_eq!(n("/a%zz", Base), "/a%25zz");
        assert_eq!(n("/a%2", Base), "/a%252");
        assert_eq!(n("/%%3341", Base), "/%25341");
        assert_eq!(n("/a..b/c.d", Base), "/a..b/c.d");
        assert_eq!(normalize("/plain/path?q=1", Base), Ok(Option::None));
        assert_eq!(
            normalize("/index.html/.well-known/a..b", Base),
            Ok(Option::None)
        );
        assert_eq!(normalize("/a//b", MergeSlashes), Ok(Some("/a/b".into())));
        assert_eq!(normalize("/a/%00", Base), Err(NormalizeError::EncodedNul));
    }

    #[test]
    fn merge_and_decode_slashes() {
        assert_eq!(n("/a//b///c", MergeSlashes), "/a/b/c");
        assert_eq!(n("//a/..//b", MergeSlashes), "/b");
        assert_eq!(n("/a%2fb", MergeSlashes), "/a%2Fb");
        assert_eq!(n("/a%2fb", DecodeAndMergeSlashes), "/a/b");
        assert_eq!(n("/a%5C%2F/b", DecodeAndMergeSlashes), "/a/b");
        // Envoy's order: decode, RFC 3986 (the `..` drops the empty
        // segment), then merge.
        assert_eq!(
            n("/public/%2f..%2fadmin", DecodeAndMergeSlashes),
            "/public/admin"
        );
        assert_eq!(n("/public/..%2fadmin", DecodeAndMergeSlashes), "/admin");
        assert_eq!(n("/public/../admin", None), "/public/../admin");
        assert_eq!(n("/a//b", None), "/a//b");
    }

    #[test]
    fn istio_names() {
        assert_eq!(PathNormalization::from_istio("BASE"), Some(Base));
        assert_eq!(PathNormalization::from_istio("DEFAULT"), Some(Base));
        assert_eq!(
            PathNormalization::from_istio("DECODE_AND_MERGE_SLASHES"),
            Some(DecodeAndMergeSlashes)
        );
        assert_eq!(PathNormalization::from_istio("nope"), Option::None);
        let c = PathNormalizationCell::default();
        assert_eq!(c.get(), Base);
        c.set(MergeSlashes);
        assert_eq!(c.get(), MergeSlashes);
    }
}
