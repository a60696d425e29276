//! The `date` response header value (RFC 9110 §6.6.1), formatted once per
//! second per thread, as hyper and Envoy cache it.
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

/// Calls `f` with the current IMF-fixdate, e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT` (29 bytes).
pub fn with<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let s = httpdate::fmt_http_date(now);
            let n = s.len().min(29);
            c.1[..n].copy_from_slice(&s.as_bytes()[..n]);
            c.0 = secs;
        }
        f(&c.1)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn imf_fixdate() {
        let d = super::with(|d| String::from_utf8(d.to_vec()).unwrap());
        assert!(httpdate::parse_http_date(&d).is_ok(), "{d}");
        assert!(d.ends_with(" GMT"));
    }
}
