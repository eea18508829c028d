//! Values to frames and back: encoding with the fd table, inline or
//! shared-memory bodies, and the validation of every received frame.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier_transport::{
    DatagramSocket, FrameTransport, SeqPacketSocket, TransportError, Wait, MAX_FDS,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::handshake::Hello;
use crate::large::{self, RingSet, RingState};
use crate::ring::{self, Ended};
use crate::shm::{self, Mapping};
use crate::wire::{BodyKind, Header, RingRef, HEADER_LEN, MAX_INLINE_FRAME};
use crate::{depth, fdtable, ChannelError, Config, FrameError};

/// What a channel end sends and receives through.
pub(crate) enum Link {
    SeqPacket(SeqPacketSocket),
    Datagram(DatagramSocket),
    Other(Box<dyn FrameTransport>),
}

impl Link {
    pub(crate) fn transport(&self) -> &dyn FrameTransport {
        match self {
            Link::SeqPacket(s) => s,
            Link::Datagram(s) => s,
            Link::Other(t) => t.as_ref(),
        }
    }

    /// Whether the peer has closed its end for good: a SEQPACKET socket
    /// says so (`POLLHUP`) as soon as the last process holding the other
    /// end has closed it; other links cannot tell.
    pub(crate) fn peer_gone(&self) -> bool {
        let Link::SeqPacket(s) = self else {
            return false;
        };
        let mut fds = [PollFd::new(s.as_fd(), PollFlags::empty())];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
            && fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLHUP))
    }

    /// [`FrameTransport::send_frame`], called statically on the sockets so
    /// that the whole path can be inlined into the channel's.
    #[inline]
    pub(crate) fn send_frame(
        &self,
        frame: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        wait: Wait,
    ) -> io::Result<()> {
        match self {
            Link::SeqPacket(s) => FrameTransport::send_frame(s, frame, fds, wait),
            Link::Datagram(s) => FrameTransport::send_frame(s, frame, fds, wait),
            Link::Other(t) => t.send_frame(frame, fds, wait),
        }
    }

    /// [`FrameTransport::recv_frame`], called statically on the sockets.
    #[inline]
    pub(crate) fn recv_frame(
        &self,
        buf: &mut Vec<u8>,
        max_len: usize,
        fds: &mut Vec<OwnedFd>,
        max_fds: usize,
        wait: Wait,
    ) -> io::Result<Option<usize>> {
        match self {
            Link::SeqPacket(s) => FrameTransport::recv_frame(s, buf, max_len, fds, max_fds, wait),
            Link::Datagram(s) => FrameTransport::recv_frame(s, buf, max_len, fds, max_fds, wait),
            Link::Other(t) => t.recv_frame(buf, max_len, fds, max_fds, wait),
        }
    }
}

/// One end's link and settings, shared by its clones.
pub(crate) struct Shared {
    pub(crate) link: Link,
    pub(crate) config: Config,
    /// What the peer announced in the handshake, when there was one.
    pub(crate) peer: Option<Hello>,
    /// Live [`Sender`](crate::Sender)s on this link: the last one to go
    /// shuts writing down.
    senders: AtomicUsize,
    /// Set once this link's fd has been put in a message: another process
    /// may own the socket now, so dropping this end shuts nothing down.
    travelled: AtomicBool,
    /// The shared ring of large bodies (socket links with a ring allowed).
    pub(crate) ring: Option<Mutex<RingState>>,
    /// [`peer_terms`](Self::peer_terms), worked out once.
    terms: (usize, bool),
    /// What this end receives, worked out once.
    receive: ReceiveTerms,
}

/// The frames a receiving end takes.
#[derive(Clone, Copy)]
struct ReceiveTerms {
    /// The longest frame: socket frames are inline up to MAX_INLINE_FRAME
    /// (larger values come in a memfd); a transport without fds carries
    /// every value inline.
    max_len: usize,
    /// The most fds per frame: none when fds are refused.
    max_fds: usize,
    accept_fds: bool,
}

impl ReceiveTerms {
    fn new(config: &Config, link_fds: bool) -> Self {
        let accept_fds = config.accepts_fds();
        ReceiveTerms {
            max_len: if link_fds {
                MAX_INLINE_FRAME
            } else {
                HEADER_LEN.saturating_add(config.get_limit())
            },
            max_fds: if accept_fds { MAX_FDS } else { 0 },
            accept_fds,
        }
    }
}

impl Shared {
    pub(crate) fn new(link: Link, config: Config) -> Arc<Self> {
        Self::handshaken(link, config, None)
    }

    pub(crate) fn handshaken(link: Link, config: Config, peer: Option<Hello>) -> Arc<Self> {
        if !config.accepts_fds() {
            // Best effort: where the kernel cannot refuse fds (or the
            // option fails), the receive path closes whatever arrives.
            let _ = match &link {
                Link::SeqPacket(s) => s.set_pass_rights(false),
                Link::Datagram(s) => s.set_pass_rights(false),
                Link::Other(_) => Ok(false),
            };
        }
        let link_fds = link.transport().supports_fds();
        let ring =
            (link_fds && config.get_shared_ring() > 0).then(|| Mutex::new(RingState::default()));
        let terms = terms(&config, peer.as_ref(), link_fds);
        let receive = ReceiveTerms::new(&config, link_fds);
        Arc::new(Shared {
            link,
            config,
            peer,
            senders: AtomicUsize::new(0),
            travelled: AtomicBool::new(false),
            ring,
            terms,
            receive,
        })
    }

    pub(crate) fn sender_added(&self) {
        self.senders.fetch_add(1, Ordering::Relaxed);
    }

    /// The race-proof end of stream: `shutdown(SHUT_WR)` tells the peer
    /// even if a stray copy of the fd lives on in some other process.
    pub(crate) fn sender_dropped(&self) {
        if self.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shut(Shutdown::Write);
        }
    }

    /// `shutdown(SHUT_RD)`: the peer's sends fail at once instead of
    /// filling a queue no one reads.
    pub(crate) fn receiver_dropped(&self) {
        self.shut(Shutdown::Read);
    }

    pub(crate) fn mark_travelled(&self) {
        self.travelled.store(true, Ordering::Release);
    }

    fn shut(&self, how: Shutdown) {
        if !self.travelled.load(Ordering::Acquire) {
            // Nothing to report from a drop: a socket that cannot be shut
            // down is closed right after anyway.
            let _ = self.link.transport().shutdown(how);
        }
    }

    /// The largest value the peer receives, and whether it takes fds.
    #[inline]
    fn peer_terms(&self) -> (usize, bool) {
        self.terms
    }
}

/// The largest value a peer that announced `peer` (if any) receives over a
/// link that carries fds or not, and whether it takes fds.
fn terms(config: &Config, peer: Option<&Hello>, link_fds: bool) -> (usize, bool) {
    let own = config.get_limit();
    match peer {
        Some(p) => {
            let mut limit = own.min(usize::try_from(p.limit).unwrap_or(usize::MAX));
            if !p.accepts_fds && link_fds {
                // No memfd either: everything travels inline, and a socket
                // receiver takes inline frames up to MAX_INLINE_FRAME.
                limit = limit.min(Config::MAX_INLINE_THRESHOLD);
            }
            (limit, p.accepts_fds)
        }
        None => (own, true),
    }
}

/// Why a send did not happen (the caller puts the value back in).
pub(crate) enum SendFail {
    Full,
    Timeout,
    Disconnected,
    Failed(ChannelError),
}

/// Why a receive gave no value.
pub(crate) enum RecvFail {
    Empty,
    Timeout,
    Disconnected,
    Failed(ChannelError),
}

/// The encoding scratch of this thread, reused across sends.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) bytes: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Encoding buffers up to this size are kept for the thread's next send;
/// larger ones are freed. Keeping them is what makes repeated large sends
/// fast: measured with `cargo bench --bench channel_vs_raw`, 1 MiB values
/// went from 483 MB/s (buffer regrown by doubling for every send) to about
/// 1,280 MB/s. The cost is up to 8 MiB held per sending thread.
const KEEP_CAPACITY: usize = 8 << 20;

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            bytes: Vec::new(),
            fds: Vec::new(),
        })
    };
}

/// Encodes `value` and sends it as one frame under `wait`.
#[allow(unsafe_code)]
pub(crate) fn send<T: Serialize>(shared: &Shared, value: &T, wait: Wait) -> Result<(), SendFail> {
    // Most values are small: encoded on the stack, they touch no heap (a
    // value with fds borrows the memory of the thread's fd table). The
    // buffer is not zeroed first: that alone cost as much as the rest of
    // the encode.
    let mut frame = [MaybeUninit::<u8>::uninit(); STACK_FRAME];
    let (header, body) = frame.split_at_mut(HEADER_LEN);
    for byte in header {
        byte.write(0);
    }
    let mut fds = Vec::new();
    let encoded = fdtable::encoding(&mut fds, || {
        // postcard's `serialize_with_flavor`, written out so that it inlines.
        let mut serializer = postcard::Serializer {
            output: Fixed::new(body),
        };
        value
            .serialize(&mut serializer)
            .and_then(|()| postcard::ser_flavors::Flavor::finalize(serializer.output))
    });
    let sent = match encoded {
        Ok(len) => {
            let written = &mut frame[..HEADER_LEN + len];
            // SAFETY: the header bytes were zeroed above and the flavor wrote
            // the `len` body bytes after them, so all of `written` is
            // initialized; `MaybeUninit<u8>` has the layout of `u8`.
            let written = unsafe { &mut *(std::ptr::from_mut(written) as *mut [u8]) };
            let terms = shared.peer_terms();
            Some(send_inline(shared, written, &fds, wait, terms))
        }
        Err(postcard::Error::SerializeBufferFull) => None, // larger: below
        Err(e) => Some(Err(SendFail::Failed(ChannelError::Encode(e)))),
    };
    fdtable::recycle(fds); // closes the copies, sent or not
    match sent {
        Some(sent) => sent,
        None => send_from_scratch(shared, value, wait),
    }
}

/// [`send`] of a value too large for the stack: encoded in this thread's
/// scratch buffer, or where it goes (the ring, a memfd).
#[inline(never)]
fn send_from_scratch<T: Serialize>(shared: &Shared, value: &T, wait: Wait) -> Result<(), SendFail> {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            let result = encode_and_send(shared, value, wait, &mut scratch);
            scratch.fds.clear();
            if scratch.bytes.capacity() > KEEP_CAPACITY {
                scratch.bytes = Vec::new();
            }
            result
        }
        // A Serialize impl that itself sends: a scratch of its own.
        Err(_) => encode_and_send(shared, value, wait, &mut Scratch::default()),
    })
}

fn encode_and_send<T: Serialize>(
    shared: &Shared,
    value: &T,
    wait: Wait,
    scratch: &mut Scratch,
) -> Result<(), SendFail> {
    let (limit, peer_takes_fds) = shared.peer_terms();
    let transport = shared.link.transport();
    let shared_memory = peer_takes_fds && transport.supports_fds();
    // Values that may go through shared memory are encoded here only up to
    // the inline threshold: past it, the body is encoded where it goes.
    let cap = if shared_memory {
        HEADER_LEN + shared.config.get_inline_threshold()
    } else {
        usize::MAX
    };
    let Scratch { bytes, fds } = scratch;
    bytes.clear();
    bytes.resize(HEADER_LEN, 0);
    let encoded = fdtable::encoding(fds, || {
        postcard::serialize_with_flavor(value, Capped { out: bytes, cap })
    });
    match encoded {
        Ok(()) => {}
        Err(postcard::Error::SerializeBufferFull) if shared_memory => {
            fds.clear();
            return send_large(shared, value, wait, scratch, limit);
        }
        Err(e) => return Err(SendFail::Failed(ChannelError::Encode(e))),
    }
    send_inline(shared, bytes, fds, wait, (limit, peer_takes_fds))
}

/// Sends `frame` (header room, then the body) inline with `fds`, after the
/// checks against the peer's terms; writes the header.
fn send_inline(
    shared: &Shared,
    frame: &mut [u8],
    fds: &[OwnedFd],
    wait: Wait,
    (limit, peer_takes_fds): (usize, bool),
) -> Result<(), SendFail> {
    let body_len = frame.len() - HEADER_LEN;
    if body_len > limit {
        return Err(too_large(body_len, limit));
    }
    let fd_count = fds.len();
    if fd_count > 0 {
        if !shared.link.transport().supports_fds() {
            return Err(SendFail::Failed(ChannelError::FdsUnsupported {
                count: fd_count,
            }));
        }
        if !peer_takes_fds {
            return Err(SendFail::Failed(ChannelError::FdsRefused {
                count: fd_count,
            }));
        }
        check_fds(fd_count, MAX_FDS)?;
    }
    Header::write_inline(frame, fd_count, body_len as u64);
    shared
        .link
        .send_frame(&[IoSlice::new(frame)], borrowed(fds), wait)
        .map_err(send_fail)
}

// `borrowed` reads a slice of owned fds as borrowed ones.
static_assertions::assert_eq_size!(OwnedFd, BorrowedFd<'static>);
static_assertions::assert_eq_align!(OwnedFd, BorrowedFd<'static>);

/// `fds` as borrowed fds, in place: no vector is built per send.
#[allow(unsafe_code)]
#[inline]
fn borrowed(fds: &[OwnedFd]) -> &[BorrowedFd<'_>] {
    // SAFETY: std documents both `OwnedFd` and `BorrowedFd` as
    // `repr(transparent)` with "the representation of a host file
    // descriptor", and both as never holding -1: the same layout (size and
    // alignment also asserted above) and the same valid values, so every
    // element of `fds` is a valid `BorrowedFd`. The result borrows `fds`,
    // so every fd stays open for as long as it is used.
    unsafe { std::slice::from_raw_parts(fds.as_ptr().cast::<BorrowedFd<'_>>(), fds.len()) }
}

/// Sends a value above the inline threshold: through the ring, or in a
/// sealed memfd of its own.
fn send_large<T: Serialize>(
    shared: &Shared,
    value: &T,
    wait: Wait,
    scratch: &mut Scratch,
    limit: usize,
) -> Result<(), SendFail> {
    let (measured, fd_fields) =
        fdtable::sizing(|| postcard::serialize_with_flavor(value, Measure::default()));
    let (size, skew) = measured.map_err(|e| SendFail::Failed(ChannelError::Encode(e)))?;
    if size > limit {
        return Err(too_large(size, limit));
    }
    let sizing = large::Sizing {
        size,
        skew,
        fd_fields,
    };
    if let Some(sent) = large::send_in_ring(shared, value, sizing, wait, scratch) {
        return sent;
    }
    let Scratch { bytes, fds } = scratch;
    bytes.clear();
    bytes.resize(HEADER_LEN, 0);
    let encoded = fdtable::encoding(fds, || {
        postcard::serialize_with_flavor(
            value,
            Capped {
                out: bytes,
                cap: usize::MAX,
            },
        )
    });
    encoded.map_err(|e| SendFail::Failed(ChannelError::Encode(e)))?;
    let body_len = bytes.len() - HEADER_LEN;
    if body_len > limit {
        return Err(too_large(body_len, limit));
    }
    check_fds(fds.len(), MAX_FDS - 1)?;
    Header {
        kind: BodyKind::SharedMemory,
        fd_count: fds.len(),
        body_len: body_len as u64,
        ring: None,
    }
    .write(&mut bytes[..HEADER_LEN]);
    let memfd =
        shm::create(&bytes[HEADER_LEN..]).map_err(|e| SendFail::Failed(ChannelError::Io(e)))?;
    let fds: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).chain([memfd.as_fd()]).collect();
    shared
        .link
        .send_frame(&[IoSlice::new(&bytes[..HEADER_LEN])], &fds, wait)
        .map_err(send_fail)
}

fn too_large(size: usize, limit: usize) -> SendFail {
    SendFail::Failed(ChannelError::TooLarge { size, limit })
}

fn check_fds(count: usize, max: usize) -> Result<(), SendFail> {
    if count > max {
        return Err(SendFail::Failed(ChannelError::TooManyFds { count, max }));
    }
    Ok(())
}

/// The largest frame encoded on the stack (a value of up to 496 bytes; a
/// message with all 253 fds in a `Vec<Fd<_>>` fits).
const STACK_FRAME: usize = 512;

/// A postcard output flavor over a fixed, uninitialized slice: it writes
/// the first `len` bytes.
struct Fixed<'a> {
    out: &'a mut [MaybeUninit<u8>],
    len: usize,
}

impl<'a> Fixed<'a> {
    fn new(out: &'a mut [MaybeUninit<u8>]) -> Self {
        Fixed { out, len: 0 }
    }
}

impl postcard::ser_flavors::Flavor for Fixed<'_> {
    type Output = usize;

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        let slot = self
            .out
            .get_mut(self.len)
            .ok_or(postcard::Error::SerializeBufferFull)?;
        slot.write(data);
        self.len += 1;
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let end = self.len + data.len();
        let slots = self
            .out
            .get_mut(self.len..end)
            .ok_or(postcard::Error::SerializeBufferFull)?;
        for (slot, &byte) in slots.iter_mut().zip(data) {
            slot.write(byte);
        }
        self.len = end;
        Ok(())
    }

    #[inline]
    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.len)
    }
}

/// A postcard output flavor that only measures: the encoding's size, and
/// the skew to place it at in a ring (see `RingTx::place`): the offset in
/// the encoding of its largest byte block, less the offset of that block's
/// source within its cache line. The block then sits at the same offset in
/// its ring line as in its source line, and its copy into the ring runs
/// between equally aligned lines (`rep movsb`, which glibc uses for copies
/// of 2 KiB to 1 MiB on the AMD machine of docs/measurements.md, copies
/// lines offset by 16 bytes from each other at half speed).
#[derive(Default)]
struct Measure {
    size: usize,
    largest: usize,
    largest_at: usize,
    /// Where the largest block's source sits in its cache line.
    largest_from: usize,
}

impl postcard::ser_flavors::Flavor for Measure {
    type Output = (usize, usize);

    fn try_push(&mut self, _: u8) -> postcard::Result<()> {
        self.size += 1;
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() > self.largest {
            (self.largest, self.largest_at) = (data.len(), self.size);
            self.largest_from = data.as_ptr() as usize % LINE;
        }
        self.size += data.len();
        Ok(())
    }

    fn finalize(self) -> postcard::Result<(usize, usize)> {
        let skew = (self.largest_at % LINE + LINE - self.largest_from) % LINE;
        Ok((self.size, skew))
    }
}

/// The ring's cache line, as a `usize` (see [`Measure`]).
const LINE: usize = ring::LINE as usize;

/// A postcard output flavor that appends to a `Vec` and gives up with
/// `SerializeBufferFull` once the output would pass `cap` bytes.
struct Capped<'a> {
    out: &'a mut Vec<u8>,
    cap: usize,
}

impl postcard::ser_flavors::Flavor for Capped<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if self.out.len() >= self.cap {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.out.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() > self.cap - self.out.len() {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.out.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cold]
pub(crate) fn send_fail(e: io::Error) -> SendFail {
    match e.kind() {
        io::ErrorKind::WouldBlock => SendFail::Full,
        io::ErrorKind::TimedOut => SendFail::Timeout,
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionRefused
        | io::ErrorKind::NotConnected
        | io::ErrorKind::ConnectionReset => SendFail::Disconnected,
        _ => SendFail::Failed(ChannelError::Io(e)),
    }
}

/// A receiving end's reusable buffers.
#[derive(Default)]
pub(crate) struct RecvState {
    frame: Vec<u8>,
    fds: Vec<OwnedFd>,
    table: Vec<Option<OwnedFd>>,
    pub(crate) rings: RingSet,
    spin: ring::SpinTime,
}

/// Receives one frame under `wait` and decodes it as a `T`.
pub(crate) fn recv<T: DeserializeOwned>(
    shared: &Shared,
    state: &mut RecvState,
    wait: Wait,
) -> Result<T, RecvFail> {
    match recv_once(shared, state, wait) {
        Ok(value) => Ok(value),
        Err(None) => recv_past_withdrawn(shared, state, wait),
        Err(Some(fail)) => Err(fail),
    }
}

/// [`recv`] after a frame whose streamed value was withdrawn (it never
/// was): the next frames, under the same `wait`, but none begun past its
/// deadline (a peer that withdraws stream after stream would otherwise
/// hold the receive for as long as it goes on). Out of line, so that the
/// common receive stays straight.
#[cold]
#[inline(never)]
fn recv_past_withdrawn<T: DeserializeOwned>(
    shared: &Shared,
    state: &mut RecvState,
    wait: Wait,
) -> Result<T, RecvFail> {
    loop {
        if let Wait::Until(deadline) = wait {
            if Instant::now() >= deadline {
                return Err(RecvFail::Timeout);
            }
        }
        match recv_once(shared, state, wait) {
            Ok(value) => return Ok(value),
            Err(None) => {}
            Err(Some(fail)) => return Err(fail),
        }
    }
}

/// Receives one frame and decodes it; `Err(None)` for a streamed value
/// its sender withdrew.
#[inline(always)]
fn recv_once<T: DeserializeOwned>(
    shared: &Shared,
    state: &mut RecvState,
    wait: Wait,
) -> Result<T, Option<RecvFail>> {
    // Empty after every receive here; a transport of the user's may leave
    // fds behind on an error, and they must not join the next frame.
    state.fds.clear();
    let ReceiveTerms {
        max_len,
        max_fds,
        accept_fds,
    } = shared.receive;
    let got = if state.rings.took_frame() {
        recv_frame_after_ring(shared, state, wait)
    } else {
        shared
            .link
            .recv_frame(&mut state.frame, max_len, &mut state.fds, max_fds, wait)
    };
    let len = match got {
        Ok(Some(len)) => len,
        Ok(None) => return Err(Some(RecvFail::Disconnected)),
        Err(e) => return Err(Some(recv_fail(e, accept_fds, max_len))),
    };
    let result = decode(
        &state.frame[..len],
        &mut state.fds,
        &mut state.table,
        &mut state.rings,
        shared.config.get_limit(),
        &shared.link,
    );
    state.fds.clear(); // whatever the outcome, nothing that arrived stays open here
    result.map_err(|refused| match refused {
        Refused::Invalid(e) => Some(RecvFail::Failed(e)),
        Refused::Withdrawn => None,
    })
}

/// The receive after a value that came through a ring: large values tend to
/// come one after the other, and the next frame usually follows within
/// microseconds. Polled without sleeping for a short while first (where
/// the sender can run meanwhile, see [`ring::SpinTime`]), so that neither
/// side pays for a sleep and a wake per value (measured with 64 KiB
/// values: a receiver that slept about once every three values moved half
/// as much as one that seldom slept).
#[inline(never)]
fn recv_frame_after_ring(
    shared: &Shared,
    state: &mut RecvState,
    wait: Wait,
) -> io::Result<Option<usize>> {
    let ReceiveTerms {
        max_len, max_fds, ..
    } = shared.receive;
    let spin = match wait {
        Wait::Never => Duration::ZERO,
        _ => state.spin.get(),
    };
    let mut spin_until = Instant::now() + spin;
    if let Wait::Until(deadline) = wait {
        spin_until = spin_until.min(deadline);
    }
    while !spin.is_zero() {
        state.fds.clear();
        let got = shared.link.recv_frame(
            &mut state.frame,
            max_len,
            &mut state.fds,
            max_fds,
            Wait::Never,
        );
        match got {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return other,
        }
        if Instant::now() >= spin_until {
            break;
        }
        std::hint::spin_loop();
    }
    state.fds.clear();
    shared
        .link
        .recv_frame(&mut state.frame, max_len, &mut state.fds, max_fds, wait)
}

/// Why a frame could not be received.
#[cold]
fn recv_fail(e: io::Error, accept_fds: bool, max_len: usize) -> RecvFail {
    match e.kind() {
        io::ErrorKind::WouldBlock => RecvFail::Empty,
        io::ErrorKind::TimedOut => RecvFail::Timeout,
        _ => RecvFail::Failed(match TransportError::of(&e) {
            // The fds were closed on arrival (by the kernel, or by the
            // transport for the ones that did fit).
            Some(TransportError::FdsTruncated { .. }) if !accept_fds => {
                ChannelError::FdsNotAccepted
            }
            Some(&TransportError::Truncated { len, .. }) => {
                FrameError::TooLong { len, max: max_len }.into()
            }
            _ => ChannelError::Io(e),
        }),
    }
}

/// Why a frame gave no value.
pub(crate) enum Refused {
    /// It was invalid.
    Invalid(ChannelError),
    /// It was a streamed value that its sender withdrew, or left unfinished
    /// when it went: there is no value, and no error either.
    Withdrawn,
}

/// Validates a frame (from `link`) and decodes its body with its fds.
#[inline(always)]
pub(crate) fn decode<T: DeserializeOwned>(
    frame: &[u8],
    fds: &mut Vec<OwnedFd>,
    table: &mut Vec<Option<OwnedFd>>,
    rings: &mut RingSet,
    limit: usize,
    link: &Link,
) -> Result<T, Refused> {
    if let (true, Some(body)) = (fds.is_empty(), Header::plain_body(frame, limit)) {
        // The common frame: the body follows, no fds (and the table, empty
        // between receives, stays out of it).
        let (decoded, violation) = fdtable::decoding(table, || depth::decode::<T>(body));
        return finish(decoded.map(|(value, rest)| (value, rest.len())), violation)
            .map_err(Refused::Invalid);
    }
    match decode_any(frame, fds, table, rings, limit, link) {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(Refused::Withdrawn),
        Err(e) => Err(Refused::Invalid(e)),
    }
}

/// [`decode`] of a frame with fds, or with its body elsewhere (or one that
/// fails validation); `None` for a streamed body its sender withdrew, or
/// left unfinished when it went (`link` says whether it has).
#[inline(never)]
fn decode_any<T: DeserializeOwned>(
    frame: &[u8],
    fds: &mut Vec<OwnedFd>,
    table: &mut Vec<Option<OwnedFd>>,
    rings: &mut RingSet,
    limit: usize,
    link: &Link,
) -> Result<Option<T>, ChannelError> {
    let header = match Header::parse(frame, fds.len(), limit) {
        Ok(header) => header,
        Err(e) => {
            rings.release_refused(frame);
            return Err(e.into());
        }
    };
    if let (BodyKind::Ring, Some(r)) = (header.kind, header.ring) {
        return decode_ring_frame(header.body_len, r, fds, table, rings, limit, link);
    }
    let mapping;
    let body = match header.kind {
        BodyKind::SharedMemory => {
            let memfd = fds.pop().ok_or(FrameError::FdCountMismatch {
                declared: 1,
                received: 0,
            })?;
            mapping = Mapping::new(&memfd, header.body_len as usize)?;
            mapping.as_slice()
        }
        _ => &frame[HEADER_LEN..],
    };
    table.clear();
    if !fds.is_empty() {
        into_table(fds, table);
    }
    let (decoded, violation) = fdtable::decoding(table, || depth::decode::<T>(body));
    finish(decoded.map(|(value, rest)| (value, rest.len())), violation).map(Some)
}

/// [`decode_any`] of a ring frame: the body `r` names, `body_len` bytes.
#[inline(never)]
fn decode_ring_frame<T: DeserializeOwned>(
    body_len: u64,
    r: RingRef,
    fds: &mut Vec<OwnedFd>,
    table: &mut Vec<Option<OwnedFd>>,
    rings: &mut RingSet,
    limit: usize,
    link: &Link,
) -> Result<Option<T>, ChannelError> {
    let attached = if r.attached { fds.pop() } else { None };
    let ring = rings.ring_for(r, attached, limit)?;
    let peer_gone = || link.peer_gone();
    let body = ring.body(r.start, body_len, r.streamed, &peer_gone)?;
    into_table(fds, table);
    let (decoded, violation) = fdtable::decoding(table, || depth::decode_ring::<T>(&body));
    let ended = body.ended();
    // Read (or refused) either way: the space goes back to the sender (as
    // it does should the decode panic).
    drop(body);
    drop(ring);
    rings.retire(r);
    match ended {
        None => finish(decoded, violation).map(Some),
        Some(Ended::Withdrawn | Ended::SenderGone) => Ok(None),
        Some(Ended::Stalled) => Err(FrameError::Stalled { after: ring::STALL }.into()),
    }
}

/// Moves the fds that arrived into the (cleared) decoding table, in order,
/// leaving `fds` empty with its memory kept. Pops and a reverse rather than
/// a `drain`, whose drop the compiler keeps out of line.
#[inline]
fn into_table(fds: &mut Vec<OwnedFd>, table: &mut Vec<Option<OwnedFd>>) {
    table.clear();
    table.reserve(fds.len());
    while let Some(fd) = fds.pop() {
        table.push(Some(fd));
    }
    table.reverse();
}

/// The value of a decode, or why there is none.
fn finish<T>(
    decoded: Result<(T, usize), Option<postcard::Error>>,
    violation: Option<ChannelError>,
) -> Result<T, ChannelError> {
    if let Some(violation) = violation {
        return Err(violation); // a decoded value is dropped here, closing its fds
    }
    let (value, rest) = decoded.map_err(|e| match e {
        Some(e) => ChannelError::Decode(e),
        None => FrameError::TooDeep {
            limit: depth::MAX_DEPTH,
        }
        .into(),
    })?;
    if rest > 0 {
        return Err(FrameError::TrailingBytes { count: rest }.into());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use postcard::ser_flavors::Flavor;

    #[test]
    fn the_skew_puts_the_largest_block_at_its_sources_offset_in_a_line() {
        let source = vec![7u8; 4096];
        for from in [0, 1, 16, 33, 63, 64, 100] {
            for before in [0, 3, 64, 70] {
                let mut measure = Measure::default();
                measure.try_extend(&source[..before]).unwrap();
                let block = &source[from..from + 1000];
                measure.try_extend(block).unwrap();
                measure.try_push(1).unwrap();
                let (size, skew) = measure.finalize().unwrap();
                assert_eq!(size, before + 1001);
                // A body placed with byte `skew` on a line boundary has
                // the block at `before - skew` into a line.
                assert_eq!(
                    (before + LINE - skew) % LINE,
                    block.as_ptr() as usize % LINE,
                    "block from {from} after {before} bytes"
                );
            }
        }
    }
}
