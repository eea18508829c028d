//! Target `fd_table`: a frame with fds of chosen kinds attached, to a typed
//! `Receiver<Message>`.
//!
//! Input: byte 0 chooses how many fds (`255`: 253, the most a message can
//! carry; otherwise `byte % 17`); byte 1 bit 0 makes the receiver refuse
//! fds (`Config::accept_fds(false)`); then one byte per fd chooses its kind
//! (`byte % KINDS`, see [`Pool`]); the rest is the frame.
//!
//! Checks: as `frame_decode`, and once the receiver, the value and the
//! test's own fds are dropped, this process has exactly the fds and memfd
//! mappings it had before the input: every fd that arrived was closed.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixDatagram, UnixStream};

use courier_channel::{Config, Receiver};
use courier_transport::SeqPacketSocket;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::{
    alloc, body_of, check_outcome, check_usable, fd_count, frame_decode::HEAP_BOUND,
    memfd_mappings, send_raw, Input, Message, ProbeShape, WAIT,
};

/// How many kinds of fd an input can choose from.
pub const KINDS: u8 = 11;
/// The id written at offset 0 of the ring memfd (kind 9).
pub const RING_ID: u64 = 0x0123_4567_89ab_cdef;
/// The ring's control page.
pub const RING_CONTROL: usize = 4096;
/// The ring's data area.
pub const RING_DATA: usize = 64 << 10;

/// The body in the memfds of kinds 3 and 4.
pub fn memfd_body() -> Vec<u8> {
    body_of(&ProbeShape::Text("in a memfd".into()))
}

/// The body at the start of the ring's data area (kind 9).
pub fn ring_body() -> Vec<u8> {
    body_of(&ProbeShape::Text("in the ring".into()))
}

fn memfd(body: &[u8], len: u64, seals: SealFlag) -> File {
    let fd = memfd_create(
        c"courier-fuzz",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .expect("memfd_create");
    let mut file = File::from(fd);
    file.write_all(body).expect("write memfd");
    if len > body.len() as u64 {
        file.set_len(len).expect("size memfd");
    }
    if !seals.is_empty() {
        fcntl(&file, FcntlArg::F_ADD_SEALS(seals)).expect("F_ADD_SEALS");
    }
    file
}

/// The fds an input attaches, made fresh for each input (so that nothing a
/// receiver does to one, such as shutting a socket down or writing a
/// ring's counters, carries over to the next input). Kinds:
///
/// | kind | fd |
/// |---|---|
/// | 0 | `/dev/null` |
/// | 1, 2 | a pipe's read and write ends |
/// | 3 | a memfd holding [`memfd_body`], sealed as courier seals bodies |
/// | 4 | the same, not sealed |
/// | 5, 6, 7 | a SEQPACKET, DGRAM and STREAM socket (connected) |
/// | 8 | the directory `/` |
/// | 9 | a ring: [`RING_ID`], [`ring_body`] at data offset 0, sealed against resizing |
/// | 10 | an empty memfd sealed as courier seals bodies |
#[derive(Default)]
pub struct Pool {
    fds: Vec<Option<OwnedFd>>,
    peers: Vec<OwnedFd>,
}

impl Pool {
    fn make(&mut self, kind: u8) -> OwnedFd {
        let sealed = SealFlag::F_SEAL_SHRINK
            | SealFlag::F_SEAL_GROW
            | SealFlag::F_SEAL_WRITE
            | SealFlag::F_SEAL_SEAL;
        match kind {
            0 => File::open("/dev/null").expect("/dev/null").into(),
            1 | 2 => {
                let (r, w) = std::io::pipe().expect("pipe");
                if kind == 1 {
                    self.peers.push(w.into());
                    r.into()
                } else {
                    self.peers.push(r.into());
                    w.into()
                }
            }
            3 => memfd(&memfd_body(), 0, sealed).into(),
            4 => memfd(&memfd_body(), 0, SealFlag::empty()).into(),
            5 => {
                let (a, b) = SeqPacketSocket::pair().expect("socketpair");
                self.peers.push(b.into());
                a.into()
            }
            6 => {
                let (a, b) = UnixDatagram::pair().expect("socketpair");
                self.peers.push(b.into());
                a.into()
            }
            7 => {
                let (a, b) = UnixStream::pair().expect("socketpair");
                self.peers.push(b.into());
                a.into()
            }
            8 => File::open("/").expect("open /").into(),
            9 => {
                let ring = memfd(
                    &RING_ID.to_le_bytes(),
                    (RING_CONTROL + RING_DATA) as u64,
                    SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW,
                );
                ring.write_all_at(&ring_body(), RING_CONTROL as u64)
                    .expect("write ring");
                ring.into()
            }
            _ => memfd(&[], 0, sealed).into(),
        }
    }

    /// Makes the fd of `kind` unless it is there.
    pub fn ensure(&mut self, kind: u8) {
        let kind = usize::from(kind % KINDS);
        if self.fds.len() <= kind {
            self.fds.resize_with(kind + 1, || None);
        }
        if self.fds[kind].is_none() {
            self.fds[kind] = Some(self.make(kind as u8));
        }
    }

    /// The fd of `kind` (made by [`ensure`](Self::ensure)).
    pub fn get(&self, kind: u8) -> BorrowedFd<'_> {
        self.fds[usize::from(kind % KINDS)]
            .as_ref()
            .expect("ensured")
            .as_fd()
    }
}

/// Runs one input; returns what the receive gave (see
/// [`check_outcome`](crate::check_outcome)), or "skipped".
pub fn run(data: &[u8]) -> &'static str {
    let fds_before = fd_count();
    let maps_before = memfd_mappings();
    let what = one(data);
    let fds_after = fd_count();
    assert_eq!(
        fds_after, fds_before,
        "fds leaked: {fds_before} before the input, {fds_after} after"
    );
    let maps_after = memfd_mappings();
    assert_eq!(
        maps_after, maps_before,
        "memfd mappings leaked: {maps_before} before the input, {maps_after} after"
    );
    what
}

fn one(data: &[u8]) -> &'static str {
    let mut input = Input::new(data);
    let count = match input.byte() {
        255 => 253,
        n => usize::from(n % 17),
    };
    let refuse_fds = input.byte() & 1 == 1;
    let kinds: Vec<u8> = (0..count).map(|_| input.byte() % KINDS).collect();
    let frame = input.rest();

    let mut pool = Pool::default();
    for &kind in &kinds {
        pool.ensure(kind);
    }
    let fds: Vec<BorrowedFd<'_>> = kinds.iter().map(|&kind| pool.get(kind)).collect();
    let (peer, sock) = SeqPacketSocket::pair().expect("socketpair");
    let rx = Receiver::<Message>::from_socket(sock, Config::new().accept_fds(!refuse_fds));
    if !send_raw(&peer, frame, &fds) {
        return "skipped";
    }
    let mark = alloc::mark();
    let outcome = rx.recv_timeout(WAIT);
    let what = check_outcome(&outcome);
    drop(outcome); // a value closes its fds here
    let grew = mark.peak_growth();
    assert!(
        grew <= HEAP_BOUND,
        "one frame with {count} fds made the receiver allocate {grew} bytes"
    );
    check_usable(&peer, &rx);
    what
}
