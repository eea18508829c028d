//! What courier's fuzz targets share: the value type the fuzzed receivers
//! decode, raw frame builders, raw sends, the fd and mapping counts, a
//! counting allocator, and the body of each target (so that a crash input
//! can be replayed by a plain test, on stable, without libFuzzer).
//!
//! Each target is a function of the fuzzer's bytes that must return; it
//! panics (a crash for libFuzzer) when courier panics, returns an untyped
//! error, hangs past a bound, leaks an fd or a mapping, or allocates beyond
//! a bound. See README.md for the input layout of each target.

pub mod alloc;
pub mod fd_table;
pub mod frame_decode;
pub mod handshake;
pub mod pipe_framing;
pub mod seeds;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IoSlice, PipeReader};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use courier_channel::{
    Bytes, ChannelError, Fd, Receiver, RecvTimeoutError, Sender, HEADER_LEN, WIRE_VERSION,
};
use courier_transport::{SendMsg, SeqPacketSocket, Wait};
use serde::{Deserialize, Serialize};

/// How long a receive may wait for a frame that was sent before it: far
/// more than it takes; reaching it is a hang.
pub const WAIT: Duration = Duration::from_secs(2);

/// What the fuzzed receivers decode: many shapes (numbers, strings, byte
/// blocks, sequences, maps, options, nested structs and enums, recursion)
/// and fd fields of several kinds, including channel ends.
#[derive(Serialize, Deserialize, Debug)]
pub enum Message {
    /// No payload.
    Empty,
    /// A varint.
    Number(u64),
    /// A zigzag varint.
    Signed(i32),
    /// UTF-8, validated.
    Text(String),
    /// One length-prefixed block.
    Blob(Bytes),
    /// A sequence of varints.
    List(Vec<u16>),
    /// Nested structs, maps, tuples, floats, chars.
    Record(Record),
    /// An fd that must be a file (any fd is).
    File(Fd<File>),
    /// An fd that must be a pipe.
    Pipe(Fd<PipeReader>),
    /// Several fds.
    Files(Vec<Fd<File>>),
    /// An optional fd of any kind, and an optional note.
    Any {
        /// The fd.
        fd: Option<Fd>,
        /// The note.
        note: Option<String>,
    },
    /// A channel end that must be a SEQPACKET or DGRAM socket.
    Channel(Sender<u32>),
    /// A receiving channel end, with its list of rings.
    Reply(Receiver<String>),
    /// Recursion: courier's depth limit keeps the decoder's stack bounded.
    Deep(Option<Box<Message>>),
}

/// A struct of many field kinds.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Record {
    /// A varint.
    pub id: u32,
    /// A string.
    pub name: String,
    /// Strings.
    pub tags: Vec<String>,
    /// A tuple.
    pub flags: (bool, char),
    /// A map of options.
    pub map: BTreeMap<u8, Option<i64>>,
    /// A float.
    pub real: f64,
    /// A nested struct.
    pub inner: Option<Inner>,
    /// An enum of every variant kind.
    pub shape: Shape,
}

/// A nested struct.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Inner {
    /// Options in a sequence.
    pub bytes: Vec<Option<u8>>,
    /// A 128-bit integer.
    pub wide: i128,
}

/// Unit, newtype, tuple and struct variants.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub enum Shape {
    /// Unit.
    Unit,
    /// Newtype.
    Newtype(u8),
    /// Tuple.
    Tuple(u16, String),
    /// Struct.
    Struct {
        /// A varint.
        a: u64,
        /// Booleans.
        b: Vec<bool>,
    },
}

/// A valid record, for seeds.
pub fn sample_record() -> Record {
    Record {
        id: 7,
        name: "record".into(),
        tags: vec!["a".into(), "bc".into()],
        flags: (true, 'é'),
        map: [(1, Some(-5)), (2, None)].into_iter().collect(),
        real: 1.5,
        inner: Some(Inner {
            bytes: vec![Some(1), None, Some(255)],
            wide: -1 << 100,
        }),
        shape: Shape::Tuple(3, "three".into()),
    }
}

/// Frame kinds (byte 3 of the header).
pub const KIND_INLINE: u8 = 0;
/// The body is in a sealed memfd, the frame's last fd.
pub const KIND_SHARED: u8 = 1;
/// The body is in the sender's ring.
pub const KIND_RING: u8 = 2;

/// A 16-byte frame header; see docs/wire-format.md.
pub fn header(kind: u8, fd_count: u16, flags: u8, body_len: u64) -> [u8; HEADER_LEN] {
    let mut out = [0; HEADER_LEN];
    out[0..2].copy_from_slice(b"CR");
    out[2] = WIRE_VERSION;
    out[3] = kind;
    out[4..6].copy_from_slice(&fd_count.to_le_bytes());
    out[6] = flags;
    out[8..16].copy_from_slice(&body_len.to_le_bytes());
    out
}

/// An honest inline frame around `body`, declaring `fd_count` fds.
pub fn inline_frame(fd_count: u16, body: &[u8]) -> Vec<u8> {
    let mut frame = header(KIND_INLINE, fd_count, 0, body.len() as u64).to_vec();
    frame.extend_from_slice(body);
    frame
}

/// A kind-2 frame naming ring `id`, the body at `start`, `len` bytes long.
pub fn ring_frame(fd_count: u16, attached: bool, len: u64, id: u64, start: u64) -> Vec<u8> {
    let mut frame = header(KIND_RING, fd_count, u8::from(attached), len).to_vec();
    for field in [id, start, 0] {
        frame.extend_from_slice(&field.to_le_bytes());
    }
    frame
}

/// postcard's encoding of `value` (which must hold no fd field).
pub fn body_of<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encoding")
}

/// The value sent after each fuzzed frame: the channel must still work.
pub const PROBE: u64 = 0x5eed;

/// The frame of `Message::Number(PROBE)`.
pub fn probe_frame() -> Vec<u8> {
    inline_frame(0, &body_of(&ProbeShape::Number(PROBE)))
}

/// The first variants of [`Message`], without fds: the same encoding.
#[derive(Serialize)]
pub enum ProbeShape {
    /// `Message::Empty`.
    Empty,
    /// `Message::Number`.
    Number(u64),
    /// `Message::Signed`.
    Signed(i32),
    /// `Message::Text`.
    Text(String),
}

/// Sends `frame` with `fds` as one SEQPACKET message, the empty frame
/// included (courier's transport refuses to send those, the kernel does
/// not), without waiting: the test's sockets are fresh, so a full buffer
/// only happens when an input sends many frames. `false` when the kernel
/// does not take the message (the buffer is full, the message is too long
/// for the socket, or it carries fds to a socket that refuses them); the
/// caller then skips it, or the rest of its input.
pub fn send_raw(peer: &SeqPacketSocket, frame: &[u8], fds: &[BorrowedFd<'_>]) -> bool {
    use nix::errno::Errno;
    let refused = |errno: Option<i32>| {
        matches!(
            errno.map(Errno::from_raw),
            Some(Errno::EAGAIN | Errno::EMSGSIZE | Errno::ENOBUFS)
        ) || (errno == Some(nix::libc::EPERM) && !fds.is_empty())
    };
    if frame.is_empty() {
        use nix::sys::socket::{self, ControlMessage, MsgFlags};
        let raw: Vec<_> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let cmsgs = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
        let iov: [std::io::IoSlice<'_>; 0] = [];
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        return match socket::sendmsg::<()>(peer.as_raw_fd(), &iov, cmsgs, flags, None) {
            Ok(_) => true,
            Err(e) if refused(Some(e as i32)) => false,
            Err(e) => panic!("raw empty send failed: {e}"),
        };
    }
    let bufs = [IoSlice::new(frame)];
    match peer.send_msg(&SendMsg::new(&bufs).with_fds(fds), Wait::Never) {
        Ok(n) => {
            assert_eq!(n, frame.len(), "short SEQPACKET send");
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || refused(e.raw_os_error()) => false,
        Err(e) => panic!("raw send failed: {e}"),
    }
}

/// Checks what a receive of one fuzzed frame returned: a value or a typed
/// refusal of the frame. End of stream (the peer is alive) or a timeout
/// (the frame was sent before) is a defect. Returns the outcome's name.
pub fn check_outcome<T: std::fmt::Debug>(outcome: &Result<T, RecvTimeoutError>) -> &'static str {
    match outcome {
        Ok(_) => "value",
        Err(RecvTimeoutError::Failed(ChannelError::Frame(_))) => "frame error",
        Err(RecvTimeoutError::Failed(ChannelError::Decode(_))) => "decode error",
        Err(RecvTimeoutError::Failed(ChannelError::Refused(_))) => "fd refused",
        Err(RecvTimeoutError::Failed(ChannelError::FdsNotAccepted)) => "fds not accepted",
        Err(e) => panic!("a fuzzed frame gave {e:?}, not a value or a typed refusal"),
    }
}

/// Sends the probe frame and checks it arrives: the receiver stays usable
/// after whatever came before.
pub fn check_usable(peer: &SeqPacketSocket, rx: &Receiver<Message>) {
    assert!(send_raw(peer, &probe_frame(), &[]), "probe send");
    match rx.recv_timeout(WAIT) {
        Ok(Message::Number(PROBE)) => {}
        other => panic!("the receiver is not usable after a fuzzed frame: {other:?}"),
    }
}

/// This process's open fds (`/proc/self/fd`, the directory's own fd
/// included, which is the same every time).
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// This process's mappings of memfds (rings, shared bodies).
pub fn memfd_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("read /proc/self/maps")
        .lines()
        .filter(|line| line.contains("/memfd:"))
        .count()
}

/// Reads an input front to back; past its end every read gives zeros.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// The next byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// What is left.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}
