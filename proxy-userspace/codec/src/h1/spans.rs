//! Where each parsed header sits in the head: byte offsets from the start
//! of the buffer `httparse` parsed, kept so that the names and values can
//! become slices of the frozen head (`Bytes::slice`, no copy) once the
//! parser's borrow of the buffer ends.
//!
//! Neither this list nor `httparse`'s header array is zeroed first: both
//! are written before they are read, and zeroing them cost several KiB of
//! `memset` per message.
use std::mem::MaybeUninit;
use std::ops::Range;

/// The header value at `range` of a frozen head that `httparse` parsed,
/// sharing its allocation.
///
/// Not validated again: `httparse` accepts in header values exactly the
/// bytes `HeaderValue` allows (HTAB, SP, VCHAR and obs-text 0x80-0xFF), and
/// hyper builds its header values from `httparse` output the same way.
/// Debug builds check it.
pub fn header_value(head: &bytes::Bytes, range: Range<usize>) -> http::HeaderValue {
    // SAFETY: see above; `http` stores the bytes as they are and checks
    // them again in `to_str`.
    unsafe { http::HeaderValue::from_maybe_shared_unchecked(head.slice(range)) }
}

/// Where `h`, parsed from a buffer whose first byte is at address `base`,
/// sits in it: name start, name end, value start, value end. Heads are at
/// most 64 KiB, so the offsets fit in `u32`.
pub fn span(base: usize, h: &httparse::Header<'_>) -> [u32; 4] {
    let ns = (h.name.as_ptr() as usize - base) as u32;
    let vs = (h.value.as_ptr() as usize - base) as u32;
    [ns, ns + h.name.len() as u32, vs, vs + h.value.len() as u32]
}

/// Header slots left uninitialised until the parser writes them.
pub fn uninit_headers<'b, const N: usize>() -> [MaybeUninit<httparse::Header<'b>>; N] {
    [const { MaybeUninit::uninit() }; N]
}

/// Up to `N` (name, value) byte ranges, offsets into the parsed buffer.
pub struct Spans<const N: usize> {
    items: [MaybeUninit<[u32; 4]>; N],
    len: usize,
}

impl<const N: usize> Spans<N> {
    /// An empty list.
    pub fn new() -> Self {
        Self {
            items: [const { MaybeUninit::uninit() }; N],
            len: 0,
        }
    }

    /// Records `h`, parsed from a buffer whose first byte is at address
    /// `base` (see [`span`]).
    ///
    /// # Panics
    /// When `N` headers are recorded already (the parser had only `N`
    /// slots, so it cannot yield more).
    pub fn push(&mut self, base: usize, h: &httparse::Header<'_>) {
        self.items[self.len].write(span(base, h));
        self.len += 1;
    }

    /// The recorded (name, value) ranges in order.
    pub fn iter(&self) -> impl Iterator<Item = (Range<usize>, Range<usize>)> + '_ {
        self.items[..self.len].iter().map(|s| {
            // SAFETY: the first `len` items were written by `push`.
            let [ns, ne, vs, ve] = unsafe { s.assume_init() };
            (ns as usize..ne as usize, vs as usize..ve as usize)
        })
    }
}

impl<const N: usize> Default for Spans<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_point_at_names_and_values() {
        let buf = b"GET / HTTP/1.1\r\nhost: a\r\nx-b: cd\r\n\r\n";
        let mut raw = uninit_headers::<4>();
        let mut req = httparse::Request::new(&mut []);
        let n = req.parse_with_uninit_headers(buf, &mut raw).unwrap();
        assert!(n.is_complete());
        let mut spans = Spans::<4>::new();
        for h in req.headers.iter() {
            spans.push(buf.as_ptr() as usize, h);
        }
        let got: Vec<_> = spans.iter().map(|(n, v)| (&buf[n], &buf[v])).collect();
        assert_eq!(got, [(&b"host"[..], &b"a"[..]), (&b"x-b"[..], &b"cd"[..])]);
    }
}
