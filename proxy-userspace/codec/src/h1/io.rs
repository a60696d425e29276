//! Socket writes of the HTTP/1.1 paths: what tokio's `write_all` does,
//! with `sendto(2)` made as a plain system call. glibc's `send` is a
//! thread-cancellation point and marks every call cancellable and back (two
//! atomic updates around the system call), a POSIX feature Rust programs
//! never use. Reads stay tokio's: after a short read it forgets the
//! socket's readiness race-free, which saves the `recv` that would find
//! nothing, and that is worth more than the wrapper.
use std::io;
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Writes all of `data`, waiting for room as needed.
pub async fn write_all(s: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    let fd = s.as_raw_fd();
    while !data.is_empty() {
        let sent = s.try_io(Interest::WRITABLE, || {
            // SAFETY: `data` is valid for reads of its length; no address
            // is given. MSG_NOSIGNAL: a closed peer is an EPIPE error, not
            // a signal (as std's `send` on Linux).
            let n = unsafe {
                libc::syscall(
                    libc::SYS_sendto,
                    fd,
                    data.as_ptr(),
                    data.len(),
                    libc::MSG_NOSIGNAL,
                    0usize,
                    0usize,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_everything_even_when_the_socket_buffer_fills() {
        use tokio::io::AsyncReadExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut b, _) = l.accept().await.unwrap();
        // Larger than the socket buffers: the writer has to wait for room
        // while the reader drains.
        let data: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| i as u8).collect();
        let writer = async {
            write_all(&a, &data).await.unwrap();
            drop(a);
        };
        let reader = async {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::join!(writer, reader);
        assert_eq!(got.len(), data.len());
        assert!(got == data);
    }
}
