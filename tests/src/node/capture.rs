//! A packet capture without tcpdump: an `AF_PACKET` socket opened inside a
//! node's network namespace, bound to one interface, read on a thread
//! until [`Capture::stop`]. Tests search the captured frames for plaintext
//! that must not be on the wire.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Context};

/// A running capture; [`Capture::stop`] returns every frame's bytes.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
}

impl Capture {
    /// Starts capturing every frame on `iface` in network namespace
    /// `netns` (both directions).
    pub fn start(netns: &str, iface: &str) -> anyhow::Result<Capture> {
        let iface = std::ffi::CString::new(iface)?;
        let fd = super::netns::run_in(netns, move || -> anyhow::Result<OwnedFd> {
            let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
            let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
            if raw < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let index = unsafe { libc::if_nametoindex(iface.as_ptr()) };
            if index == 0 {
                bail!("no interface {iface:?}");
            }
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto as u16;
            sll.sll_ifindex = index as i32;
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if r != 0 {
                bail!("bind AF_PACKET: {}", std::io::Error::last_os_error());
            }
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const libc::timeval as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            Ok(fd)
        })
        .context("entering the namespace")??;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut frames = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !flag.load(Ordering::Relaxed) {
                let n = unsafe {
                    libc::recv(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        0,
                    )
                };
                if n > 0 {
                    frames.push(buf[..n as usize].to_vec());
                }
            }
            frames
        });
        Ok(Capture {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops and returns the frames seen.
    pub fn stop(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether `needle` occurs in any frame.
pub fn contains(frames: &[Vec<u8>], needle: &[u8]) -> bool {
    frames
        .iter()
        .any(|f| f.windows(needle.len()).any(|w| w == needle))
}

/// Asserts that `frames` (captured on a link between nodes) show traffic
/// that crossed only through HBONE: none of `plaintext`, TCP to port 15008
/// (0x3aa0) and TLS application-data records (0x17 0x03 0x03).
pub fn assert_hbone_only(frames: &[Vec<u8>], plaintext: &[u8]) {
    assert!(
        !contains(frames, plaintext),
        "the payload crossed the link in plaintext"
    );
    assert!(
        contains(frames, &[0x3a, 0xa0]),
        "{} frames, none to 15008",
        frames.len()
    );
    assert!(
        contains(frames, &[0x17, 0x03, 0x03]),
        "no TLS application data on the link"
    );
}
