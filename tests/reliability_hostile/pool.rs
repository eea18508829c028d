//! The fds hostile frames carry: a pool of fds of the wrong kinds (pipes,
//! sockets of every type, `/dev/null`, a directory, eventfd, timerfd,
//! signalfd, pidfd, memfd, a regular file) attached again and again, and
//! [`FdRef`], which names where a frame's fd comes from.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};

use courier::transport::SeqPacketSocket;
use nix::fcntl::SealFlag;

use crate::support::memfd::memfd;
use crate::support::rng::{Random, XorShiftStar};

/// A new eventfd (nix's `event` feature is not enabled here).
#[allow(unsafe_code)]
fn eventfd() -> OwnedFd {
    // SAFETY: eventfd(2) takes two integers and touches no memory of ours.
    let raw = unsafe { nix::libc::eventfd(0, nix::libc::EFD_CLOEXEC) };
    assert!(raw >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a new fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// fds of the wrong kinds, attached to frames again and again.
pub struct Pool {
    fds: Vec<(&'static str, Box<dyn AsFd>)>,
}

pub const POOL_PIPE_R: usize = 0;
pub const POOL_SEQPACKET: usize = 2;
pub const POOL_MEMFD: usize = 3;

impl Pool {
    pub fn new() -> Pool {
        let (pipe_r, pipe_w) = std::io::pipe().expect("pipe");
        let (seq_a, _) = SeqPacketSocket::pair().expect("seqpacket pair");
        let (dgram, _) = UnixDatagram::pair().expect("dgram pair");
        let (stream, _) = UnixStream::pair().expect("stream pair");
        let timer = nix::sys::timerfd::TimerFd::new(
            nix::sys::timerfd::ClockId::CLOCK_MONOTONIC,
            nix::sys::timerfd::TimerFlags::TFD_CLOEXEC,
        )
        .expect("timerfd");
        let signal = nix::sys::signalfd::SignalFd::with_flags(
            &nix::sys::signal::SigSet::empty(),
            nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
        )
        .expect("signalfd");
        let mut fds: Vec<(&'static str, Box<dyn AsFd>)> = vec![
            ("pipe_r", Box::new(pipe_r)),
            ("pipe_w", Box::new(pipe_w)),
            ("seqpacket", Box::new(seq_a)),
            (
                "memfd",
                Box::new(memfd(b"not a body", 10, SealFlag::empty())),
            ),
            ("dgram", Box::new(dgram)),
            ("stream", Box::new(stream)),
            (
                "devnull",
                Box::new(File::open("/dev/null").expect("/dev/null")),
            ),
            ("dir", Box::new(File::open("/").expect("open /"))),
            ("eventfd", Box::new(eventfd())),
            ("timerfd", Box::new(timer)),
            ("signalfd", Box::new(signal)),
            ("file", Box::new(tempfile::tempfile().expect("temp file"))),
        ];
        if let Some(pidfd) = courier::PidFd::open(std::process::id()).expect("pidfd_open") {
            fds.push(("pidfd", Box::new(pidfd)));
        }
        Pool { fds }
    }

    pub fn fd(&self, i: usize) -> BorrowedFd<'_> {
        self.fds[i].1.as_fd()
    }

    pub fn any(&self, rng: &mut XorShiftStar) -> usize {
        rng.index(self.fds.len())
    }

    /// Neither end of a pipe.
    pub fn non_fifo(&self, rng: &mut XorShiftStar) -> usize {
        2 + rng.index(self.fds.len() - 2)
    }

    /// Not a SEQPACKET socket.
    pub fn non_seqpacket(&self, rng: &mut XorShiftStar) -> usize {
        loop {
            let i = self.any(rng);
            if i != POOL_SEQPACKET {
                return i;
            }
        }
    }

    /// Not a memfd.
    pub fn non_memfd(&self, rng: &mut XorShiftStar) -> usize {
        loop {
            let i = self.any(rng);
            if i != POOL_MEMFD {
                return i;
            }
        }
    }

    pub fn many(&self, rng: &mut XorShiftStar, n: usize) -> Vec<FdRef> {
        (0..n).map(|_| FdRef::Pool(self.any(rng))).collect()
    }
}

/// Where a frame's fd comes from.
#[derive(Clone, Copy)]
pub enum FdRef {
    Pool(usize),
    /// One of the frame's own files.
    Own(usize),
    /// A valid ring of the sender.
    Ring(usize),
    /// One of the sender's long-lived bad memfds.
    Bad(usize),
}
