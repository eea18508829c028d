//! Target `handshake`: the input is what a peer sends when a courier
//! connection is set up, against [`Endpoint::handshake`] over a
//! socketpair, a [`Listener`]'s accept, or [`Endpoint::handshake_transport`]
//! over pipes.
//!
//! Input: byte 0 is flags: bits 0-1 the mode (0 or 3: socketpair, 1:
//! listener, 2: pipes); bit 2 attaches an fd (`/dev/null`) to the first
//! frame (sockets); bit 3 stalls: the peer stays silent and open after
//! what it sent, instead of shutting its writing side; bit 4 makes this
//! side refuse fds. Then, over sockets, frames: a u16 little-endian length
//! and that many bytes each (the last one cut short by the input's end);
//! over pipes, the rest is the byte stream itself.
//!
//! Checks: the outcome is exactly what a reference reading of the peer's
//! first frame predicts (success for a valid hello of protocol
//! [`PROTOCOL`] version [`VERSION`]; otherwise the typed refusal, the
//! clean close, the timeout or the torn stream it calls for), and the
//! handshake ends in time: a timeout is only expected when the peer stalls
//! without a complete first frame, and then the handshake timeout is 5 ms;
//! otherwise it is 10 s, and reaching it fails. A listener counts each
//! failure. After a success, the peer's announced terms are the ones it
//! sent, a send is accepted or refused typed, and every frame that follows
//! is a value or a typed refusal, then the end of stream.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::OnceLock;
use std::time::Duration;

use courier_channel::{
    ChannelError, Config, ConnectError, Endpoint, Listener, RecvTimeoutError, SendError,
    WIRE_VERSION,
};
use courier_pipe::PipeTransport;
use courier_transport::{AbstractName, Address, SeqPacketSocket};

use crate::{send_raw, Input, Message, WAIT};

/// The protocol this side speaks.
pub const PROTOCOL: &str = "fuzz";
/// Its version.
pub const VERSION: u32 = 1;
/// The handshake timeout when the reference expects a timeout.
pub const SHORT: Duration = Duration::from_millis(5);
/// The handshake timeout otherwise: reaching it is a hang.
pub const LONG: Duration = Duration::from_secs(10);

const MAX_HELLO: usize = 21 + 255;

/// Mode bits of the flags byte.
pub const MODE_PAIR: u8 = 0;
/// Accepted by a [`Listener`].
pub const MODE_LISTENER: u8 = 1;
/// Over pipes.
pub const MODE_PIPE: u8 = 2;
/// Flag: an fd rides with the first frame.
pub const WITH_FD: u8 = 1 << 2;
/// Flag: the peer stalls instead of shutting down its writing side.
pub const STALL: u8 = 1 << 3;
/// Flag: this side refuses fds.
pub const REFUSE_FDS: u8 = 1 << 4;

/// What the handshake should end in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A working endpoint.
    Ok,
    /// A typed refusal of the peer's hello.
    Refused,
    /// `Closed`: the peer ended before a hello.
    Closed,
    /// `Timeout`: the peer stalls.
    Timeout,
    /// The byte stream ended inside the hello's frame.
    Torn,
}

fn category(e: &ConnectError) -> Expect {
    match e {
        ConnectError::NotCourier
        | ConnectError::Malformed { .. }
        | ConnectError::WireVersion { .. }
        | ConnectError::ProtocolMismatch { .. } => Expect::Refused,
        ConnectError::Closed => Expect::Closed,
        ConnectError::Timeout { .. } => Expect::Timeout,
        ConnectError::Io(io) if io.kind() == ErrorKind::UnexpectedEof => Expect::Torn,
        other => panic!("the handshake failed with an unexpected error: {other:?}"),
    }
}

/// Whether `frame` is a hello this side accepts.
fn valid_hello(frame: &[u8]) -> bool {
    frame.len() >= 21
        && frame[..4] == *b"CRHS"
        && frame[4] == WIRE_VERSION
        && frame[5] & !1 == 0
        && frame[6..8] == [0, 0]
        && frame.len() == 21 + usize::from(frame[20])
        && &frame[21..] == PROTOCOL.as_bytes()
        && frame[8..12] == VERSION.to_le_bytes()
}

fn frames_of(mut input: Input<'_>) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while !input.is_empty() {
        let len = u16::from_le_bytes([input.byte(), input.byte()]);
        frames.push(input.take(usize::from(len)));
    }
    frames
}

/// The expected outcome over a socket.
fn expect_socket(frames: &[&[u8]], with_fd: bool, stall: bool) -> Expect {
    match frames.first() {
        None if stall => Expect::Timeout,
        None => Expect::Closed,
        // A zero-length message reads as end of stream when the peer has
        // shut down (POLLRDHUP) and no bytes are queued behind it
        // (FIONREAD); as an empty (refused) frame otherwise, or when it
        // carries fds.
        Some(f) if f.is_empty() && !stall && !with_fd && frames.iter().all(|f| f.is_empty()) => {
            Expect::Closed
        }
        Some(f) if valid_hello(f) && !with_fd => Expect::Ok,
        Some(_) => Expect::Refused,
    }
}

/// The expected outcome over a byte stream.
fn expect_stream(stream: &[u8], stall: bool) -> Expect {
    let cut = if stall { Expect::Timeout } else { Expect::Torn };
    if stream.is_empty() {
        return if stall {
            Expect::Timeout
        } else {
            Expect::Closed
        };
    }
    if stream.len() < 4 {
        return cut;
    }
    let len = u32::from_le_bytes([stream[0], stream[1], stream[2], stream[3]]) as usize;
    if len > MAX_HELLO + 1 {
        return Expect::Refused; // refused on its length alone
    }
    match stream.get(4..4 + len) {
        None => cut,
        Some(frame) if valid_hello(frame) => Expect::Ok,
        Some(_) => Expect::Refused,
    }
}

fn config(refuse_fds: bool, expect: Expect) -> Config {
    let timeout = if expect == Expect::Timeout {
        SHORT
    } else {
        LONG
    };
    Config::new()
        .protocol(PROTOCOL, VERSION)
        .accept_fds(!refuse_fds)
        .handshake_timeout(timeout)
}

/// The listeners, one per configuration: (refuse fds, short timeout).
fn listener(refuse_fds: bool, expect: Expect) -> &'static (Listener<Message, Message>, Address) {
    static LISTENERS: OnceLock<Vec<(Listener<Message, Message>, Address)>> = OnceLock::new();
    let all = LISTENERS.get_or_init(|| {
        let mut all = Vec::new();
        for refuse in [false, true] {
            for expect in [Expect::Ok, Expect::Timeout] {
                let addr = Address::from(AbstractName::random().expect("random name"));
                let l = Listener::bind(&addr, config(refuse, expect)).expect("bind");
                all.push((l, addr));
            }
        }
        all
    });
    &all[usize::from(refuse_fds) * 2 + usize::from(expect == Expect::Timeout)]
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let stall = flags & STALL != 0;
    let refuse_fds = flags & REFUSE_FDS != 0;
    match flags & 3 {
        MODE_PIPE => over_pipes(input.rest(), stall, refuse_fds),
        mode => {
            let with_fd = flags & WITH_FD != 0;
            over_socket(
                frames_of(input),
                mode == MODE_LISTENER,
                with_fd,
                stall,
                refuse_fds,
            )
        }
    }
}

fn over_socket(frames: Vec<&[u8]>, listen: bool, with_fd: bool, stall: bool, refuse_fds: bool) {
    // Whether a timeout is expected depends only on whether any frame
    // is sent: it chooses the listener before the frames go out.
    let expect = expect_socket(&frames, with_fd, stall);
    let (peer, ours) = if listen {
        let (_, addr) = listener(refuse_fds, expect);
        (SeqPacketSocket::connect(addr).expect("connect"), None)
    } else {
        let (peer, ours) = SeqPacketSocket::pair().expect("socketpair");
        (peer, Some(ours))
    };
    let devnull = File::open("/dev/null").expect("/dev/null");
    let mut sent = 0usize;
    for (i, frame) in frames.iter().enumerate() {
        let fds: &[BorrowedFd<'_>] = &[devnull.as_fd()];
        let fds = if i == 0 && with_fd { fds } else { &[] };
        if !send_raw(&peer, frame, fds) {
            if i == 0 {
                // The kernel refused the first frame (too long for the
                // socket): nothing to test; keep the listener's backlog
                // in step.
                if listen {
                    let _ = listener(refuse_fds, expect).0.accept_timeout(WAIT);
                }
                return;
            }
            break;
        }
        sent += 1;
    }
    if !stall {
        peer.shutdown(Shutdown::Write).expect("shutdown");
    }
    // What the peer really sent (a full socket buffer ends an input's
    // frames early).
    let frames = &frames[..sent];
    let expect = expect_socket(frames, with_fd, stall);
    let config = config(refuse_fds, expect);
    let result = match ours {
        Some(ours) => Endpoint::<Message, Message>::handshake(ours, config),
        None => {
            let (l, _) = listener(refuse_fds, expect);
            let failed = l.failed();
            let result = l.accept_timeout(WAIT);
            let counted = l.failed() - failed;
            assert_eq!(
                counted,
                u64::from(result.is_err()),
                "the listener counted {counted} failures for {result:?}"
            );
            result
        }
    };
    let frame = frames.first().copied().unwrap_or_default();
    after(result, expect, frame, sent.saturating_sub(1), move || {
        drop(peer)
    });
}

fn over_pipes(stream: &[u8], stall: bool, refuse_fds: bool) {
    let expect = expect_stream(stream, stall);
    let config = config(refuse_fds, expect);
    let (ours_r, mut peer_w) = std::io::pipe().expect("pipe");
    let (_peer_r, ours_w) = std::io::pipe().expect("pipe");
    // Pipes hold 64 KiB at least: the input fits without a reader.
    let stream = &stream[..stream.len().min(60 << 10)];
    peer_w.write_all(stream).expect("write the stream");
    let mut peer_w = Some(peer_w);
    if !stall {
        peer_w = None;
    }
    let transport = PipeTransport::new(ours_r, ours_w).expect("pipe transport");
    let result = Endpoint::<Message, Message>::handshake_transport(Box::new(transport), config);
    let frame = match stream.get(..4) {
        Some(p) => {
            let len = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize;
            stream.get(4..4 + len).unwrap_or_default()
        }
        None => &[],
    };
    // Frames after the hello: at most one per 4 bytes.
    let more = stream.len() / 4 + 1;
    after(result, expect, frame, more, move || drop(peer_w));
}

/// Checks a handshake's result against `expect`; after a success, checks
/// the peer's terms, one send, then receives what follows the hello (at
/// most `more` frames) once `close` has ended the peer's side.
fn after(
    result: Result<Endpoint<Message, Message>, ConnectError>,
    expect: Expect,
    hello: &[u8],
    more: usize,
    close: impl FnOnce(),
) {
    let ep = match result {
        Ok(ep) => ep,
        Err(e) => {
            let got = category(&e);
            assert_eq!(
                got, expect,
                "the handshake failed with {e:?}, expected {expect:?}"
            );
            return;
        }
    };
    assert_eq!(
        expect,
        Expect::Ok,
        "the handshake succeeded, expected {expect:?}"
    );
    let peer = ep.peer().expect("the peer's hello");
    assert_eq!((peer.protocol.as_str(), peer.version), (PROTOCOL, VERSION));
    assert_eq!(peer.accepts_fds, hello[5] & 1 == 1, "accepts_fds");
    let mut limit = [0; 8];
    limit.copy_from_slice(&hello[12..20]);
    assert_eq!(peer.limit, u64::from_le_bytes(limit), "limit");
    match ep.send(Message::Number(1)) {
        Ok(()) => {}
        Err(SendError::Failed(_, ChannelError::TooLarge { .. })) => {
            assert!(
                peer.limit < 2,
                "a 2-byte value refused under limit {}",
                peer.limit
            )
        }
        Err(SendError::Disconnected(_)) => {}
        Err(e) => panic!("a send after the handshake failed: {e:?}"),
    }
    close();
    for _ in 0..=more {
        match ep.recv_timeout(WAIT) {
            Ok(_) => {}
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Failed(
                ChannelError::Frame(_)
                | ChannelError::Decode(_)
                | ChannelError::Refused(_)
                | ChannelError::FdsNotAccepted,
            )) => {}
            // A byte stream that ends inside a frame.
            Err(RecvTimeoutError::Failed(ChannelError::Io(e)))
                if e.kind() == ErrorKind::UnexpectedEof => {}
            Err(e) => panic!("a frame after the handshake gave {e:?}"),
        }
    }
    panic!("no end of stream after {more} frames");
}
