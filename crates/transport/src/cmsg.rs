//! Ancillary data (control messages), encoded and decoded in safe code.
//!
//! Control buffers are on the stack for sends and one per thread for
//! receives (no allocation per message), and are parsed with bounds checks
//! instead of the `CMSG_*` pointer macros. Every fd
//! found in it becomes an [`OwnedFd`] at once, including fds courier did not
//! ask for (`SCM_PIDFD`), so nothing the kernel installs can leak.

use std::cell::Cell;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::libc;

use crate::{Credentials, MAX_FDS};

const ALIGN: usize = size_of::<usize>();
const HDR_LEN: usize = align(size_of::<libc::cmsghdr>());
const FD_LEN: usize = size_of::<RawFd>();
const CRED_LEN: usize = size_of::<libc::ucred>();
/// `SCM_PIDFD` (Linux 6.5+): a pidfd sent when the receiver set SO_PASSPIDFD.
const SCM_PIDFD: i32 = 0x04;

const fn align(len: usize) -> usize {
    (len + ALIGN - 1) & !(ALIGN - 1)
}

/// `CMSG_SPACE(len)`.
const fn space(len: usize) -> usize {
    HDR_LEN + align(len)
}

/// Room for the most the kernel can put in one message: SCM_CREDENTIALS,
/// SCM_PIDFD and SCM_MAX_FD rights.
const BUF_LEN: usize = space(CRED_LEN) + space(FD_LEN) + space(MAX_FDS * FD_LEN);

/// The most fds a [`SmallCmsgBuf`] holds.
pub(crate) const SMALL_FDS: usize = 8;

/// A control buffer for sending, aligned for `cmsghdr`: `N` bytes, enough
/// for credentials and [`MAX_FDS`] fds by default.
#[repr(C, align(8))]
pub(crate) struct CmsgBuf<const N: usize = BUF_LEN> {
    bytes: [u8; N],
}

/// The send buffer for any message. Messages with up to [`SMALL_FDS`] fds
/// take a [`SmallCmsgBuf`]: zeroing the full one (1 KiB) for a message
/// with an fd or two cost more than encoding it.
pub(crate) type FullCmsgBuf = CmsgBuf<BUF_LEN>;

/// A send buffer for up to [`SMALL_FDS`] fds (see [`CmsgBuf`]).
pub(crate) type SmallCmsgBuf = CmsgBuf<{ space(CRED_LEN) + space(SMALL_FDS * FD_LEN) }>;

impl<const N: usize> CmsgBuf<N> {
    pub(crate) fn new() -> Self {
        CmsgBuf { bytes: [0; N] }
    }

    /// Writes SCM_RIGHTS (when `fds` is not empty) and SCM_CREDENTIALS (when
    /// given) and returns the encoded prefix. `fds.len()` must be at most
    /// [`MAX_FDS`] (the caller checks, before any syscall), and at most
    /// [`SMALL_FDS`] for a [`SmallCmsgBuf`].
    pub(crate) fn encode(&mut self, fds: &[BorrowedFd<'_>], creds: Option<Credentials>) -> &[u8] {
        let mut at = 0;
        if !fds.is_empty() {
            let data = fds.len() * FD_LEN;
            self.put_header(at, data, libc::SCM_RIGHTS);
            let body = &mut self.bytes[at + HDR_LEN..at + HDR_LEN + data];
            for (slot, fd) in body.chunks_exact_mut(FD_LEN).zip(fds) {
                slot.copy_from_slice(&fd.as_raw_fd().to_ne_bytes());
            }
            at += space(data);
        }
        if let Some(c) = creds {
            self.put_header(at, CRED_LEN, libc::SCM_CREDENTIALS);
            let body = &mut self.bytes[at + HDR_LEN..at + HDR_LEN + CRED_LEN];
            body[0..4].copy_from_slice(&c.pid().to_ne_bytes());
            body[4..8].copy_from_slice(&c.uid().to_ne_bytes());
            body[8..12].copy_from_slice(&c.gid().to_ne_bytes());
            at += space(CRED_LEN);
        }
        &self.bytes[..at]
    }

    fn put_header(&mut self, at: usize, data_len: usize, kind: i32) {
        let len = HDR_LEN + data_len;
        self.bytes[at..at + ALIGN].copy_from_slice(&len.to_ne_bytes());
        self.bytes[at + ALIGN..at + ALIGN + 4].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        self.bytes[at + ALIGN + 4..at + ALIGN + 8].copy_from_slice(&kind.to_ne_bytes());
        self.bytes[at + ALIGN + 8..at + HDR_LEN].fill(0);
    }

    #[cfg(test)]
    fn decode(&self, len: usize, fds: &mut Vec<OwnedFd>) -> Option<Credentials> {
        decode(&self.bytes[..len.min(N)], fds)
    }
}

/// A control buffer for `recvmsg`.
///
/// Zeroing 1 KiB on every receive cost more than the rest of a small
/// receive's user-space work, and an uninitialized one cannot be read
/// safely (the kernel counts alignment padding it never writes), so each
/// thread keeps one, zeroed once: the kernel only ever writes into it,
/// so every byte stays initialized.
#[repr(C, align(8))]
pub(crate) struct RecvCmsgBuf {
    bytes: [u8; BUF_LEN],
}

thread_local! {
    /// This thread's buffer while no receive holds it. A receive takes it
    /// out and puts it back: two plain moves that inline into the receive,
    /// where a borrow of a `RefCell` inside `LocalKey::with` did not.
    static RECV_CONTROL: Cell<Option<Box<RecvCmsgBuf>>> = const { Cell::new(None) };
}

impl RecvCmsgBuf {
    /// Runs `f` with this thread's buffer. The thread's first receive
    /// allocates it (zeroed, about 1 KiB); a receive nested in another one
    /// on the same thread, or one from a thread-local's destructor after
    /// this one is gone, gets a fresh buffer of its own, freed after it.
    #[inline]
    pub(crate) fn with<R>(f: impl FnOnce(&mut RecvCmsgBuf) -> R) -> R {
        let mut buf = RECV_CONTROL
            .try_with(Cell::take)
            .ok()
            .flatten()
            .unwrap_or_else(Self::fresh);
        let result = f(&mut buf);
        // `try_with`: a receive from a thread-local's destructor still works.
        let _ = RECV_CONTROL.try_with(|c| c.set(Some(buf)));
        result
    }

    /// A zeroed buffer, on the heap.
    #[cold]
    #[inline(never)]
    fn fresh() -> Box<RecvCmsgBuf> {
        Box::new(RecvCmsgBuf {
            bytes: [0; BUF_LEN],
        })
    }

    /// The prefix to hand to `recvmsg` so that at most `max_fds` fds fit
    /// after the credentials and pidfd messages the kernel may add.
    #[inline]
    pub(crate) fn for_recv(&mut self, max_fds: usize) -> &mut [u8] {
        let len = match max_fds {
            0 => space(CRED_LEN) + space(FD_LEN),
            MAX_FDS.. => BUF_LEN, // the usual budget: no arithmetic
            fds => space(CRED_LEN) + space(FD_LEN) + space(fds * FD_LEN),
        };
        &mut self.bytes[..len]
    }

    /// The first `len` bytes: what the last `recvmsg` wrote.
    #[inline]
    pub(crate) fn received(&self, len: usize) -> &[u8] {
        &self.bytes[..len.min(BUF_LEN)]
    }
}

/// Decodes control messages the kernel wrote: fds are appended to `fds` as
/// owned fds, SCM_PIDFD fds are closed, and the credentials are returned.
#[inline]
pub(crate) fn decode(buf: &[u8], fds: &mut Vec<OwnedFd>) -> Option<Credentials> {
    let mut creds = None;
    let mut at = 0;
    while at + HDR_LEN <= buf.len() {
        let cmsg_len = read_usize(&buf[at..]);
        let level = read_i32(&buf[at + ALIGN..]);
        let kind = read_i32(&buf[at + ALIGN + 4..]);
        if cmsg_len < HDR_LEN {
            break;
        }
        let end = at.saturating_add(cmsg_len).min(buf.len());
        let data = &buf[at + HDR_LEN..end];
        if level == libc::SOL_SOCKET {
            match kind {
                libc::SCM_RIGHTS => {
                    fds.reserve(data.len() / FD_LEN);
                    for fd in data.chunks_exact(FD_LEN) {
                        fds.extend(take_fd(fd));
                    }
                }
                SCM_PIDFD => drop(data.chunks_exact(FD_LEN).filter_map(take_fd).count()),
                libc::SCM_CREDENTIALS if data.len() >= CRED_LEN => {
                    creds = Some(Credentials::new(
                        read_i32(data),
                        read_u32(&data[4..]),
                        read_u32(&data[8..]),
                    ));
                }
                _ => {}
            }
        }
        // Next header: CMSG_NXTHDR, without overflow on a lying length.
        match at
            .checked_add(cmsg_len)
            .and_then(|n| n.checked_add(ALIGN - 1))
        {
            Some(next) => at = next & !(ALIGN - 1),
            None => break,
        }
    }
    creds
}

/// Takes ownership of one fd number the kernel just installed.
#[allow(unsafe_code)]
#[inline]
fn take_fd(bytes: &[u8]) -> Option<OwnedFd> {
    let fd = read_i32(bytes);
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel installed this fd in our table while delivering the
    // message we are decoding; nothing else knows its number, so this is its
    // one owner.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[inline]
fn read_usize(b: &[u8]) -> usize {
    let mut raw = [0u8; ALIGN];
    raw.copy_from_slice(&b[..ALIGN]);
    usize::from_ne_bytes(raw)
}

#[inline]
fn read_i32(b: &[u8]) -> i32 {
    i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

#[inline]
fn read_u32(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn encode_then_decode_round_trips_without_fds_owned_twice() {
        let mut buf = FullCmsgBuf::new();
        let creds = Credentials::new(12, 34, 56);
        let encoded_len = buf.encode(&[], Some(creds)).len();
        assert_eq!(encoded_len, space(CRED_LEN));
        let mut fds = Vec::new();
        assert_eq!(buf.decode(encoded_len, &mut fds), Some(creds));
        assert!(fds.is_empty());
    }

    #[test]
    fn the_small_buffer_holds_its_fds_and_credentials() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fds = [file.as_fd(); SMALL_FDS];
        let creds = Credentials::new(1, 2, 3);
        let mut small = SmallCmsgBuf::new();
        let mut full = FullCmsgBuf::new();
        let encoded = small.encode(&fds, Some(creds));
        assert_eq!(encoded.len(), space(SMALL_FDS * FD_LEN) + space(CRED_LEN));
        assert_eq!(encoded, full.encode(&fds, Some(creds)));
    }

    #[test]
    fn recv_budget_sizes_the_buffer() {
        RecvCmsgBuf::with(|buf| {
            assert_eq!(buf.for_recv(0).len(), space(CRED_LEN) + space(FD_LEN));
            assert_eq!(buf.for_recv(MAX_FDS).len(), BUF_LEN);
            assert_eq!(buf.for_recv(10_000).len(), BUF_LEN);
        });
    }

    #[test]
    fn garbage_lengths_do_not_panic() {
        let mut buf = FullCmsgBuf::new();
        // A header claiming a huge length, then one claiming less than a header.
        buf.put_header(0, usize::MAX / 2, 1234);
        let mut fds = Vec::new();
        assert_eq!(buf.decode(BUF_LEN, &mut fds), None);
        buf.put_header(0, 0, 1234);
        buf.bytes[..ALIGN].copy_from_slice(&3usize.to_ne_bytes());
        assert_eq!(buf.decode(BUF_LEN, &mut fds), None);
        // Encoding a real fd and decoding it gives a second owner only in the
        // decoded copy; dup first so both can be closed.
        let file = std::fs::File::open("/dev/null").unwrap();
        let dup = file.as_fd().try_clone_to_owned().unwrap();
        let encoded_len = buf.encode(&[dup.as_fd()], None).len();
        std::mem::forget(dup); // ownership moves to the decoded OwnedFd
        assert_eq!(buf.decode(encoded_len, &mut fds), None);
        assert_eq!(fds.len(), 1);
    }
}
