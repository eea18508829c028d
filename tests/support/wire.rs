//! courier's wire by hand, for the suites that play a hostile peer: frame
//! headers (any field possibly wrong), inline and ring frames, postcard
//! bodies, hellos made by hand or captured from a real courier end, and a
//! raw send that also sends what courier's transport never does (a
//! zero-length message). The layouts are in `docs/wire-format.md`.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use courier::channel::{HEADER_LEN, WIRE_VERSION};
use courier::transport::{Kind, SendMsg, SeqPacketSocket, Socket, Wait, MAX_FDS};
use courier::{Config, Endpoint, Sender};
use nix::sys::socket::{self as nixsock, ControlMessage, MsgFlags};
use serde::Serialize;

use crate::common::CHILD_TIMEOUT;

/// A ring memfd's control page, before its data area.
pub const RING_CONTROL: u64 = 4096;
/// Offset of the sender's `closed` word in a ring's control page.
pub const RING_CLOSED: u64 = 320;

/// A 16-byte frame header: kind (0 inline, 1 memfd, 2 ring), user fd
/// count, flags byte (kind 2, bit 0: the ring's memfd is attached) and
/// body length, any of them possibly wrong.
pub fn header(kind: u8, fd_count: u16, flags: u8, body_len: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN + 24);
    h.extend_from_slice(b"CR");
    h.push(WIRE_VERSION);
    h.push(kind);
    h.extend_from_slice(&fd_count.to_le_bytes());
    h.push(flags);
    h.push(0);
    h.extend_from_slice(&body_len.to_le_bytes());
    assert_eq!(h.len(), HEADER_LEN);
    h
}

/// An honest inline frame: a header declaring `fd_count` fds and the
/// length of `body`, then `body`.
pub fn inline_frame(fd_count: u16, body: &[u8]) -> Vec<u8> {
    let mut f = header(0, fd_count, 0, body.len() as u64);
    f.extend_from_slice(body);
    f
}

/// A kind-2 frame: the header, then the ring id, the body's start and the
/// ring to retire (0: none), u64 LE each.
pub fn ring_frame(
    fd_count: u16,
    flags: u8,
    body_len: u64,
    id: u64,
    start: u64,
    retire: u64,
) -> Vec<u8> {
    let mut f = header(2, fd_count, flags, body_len);
    for field in [id, start, retire] {
        f.extend_from_slice(&field.to_le_bytes());
    }
    f
}

/// A postcard encoder for hand-made bodies: varints (every integer wider
/// than a byte, enum variants, lengths), raw bytes.
#[derive(Default)]
pub struct Enc(Vec<u8>);

impl Enc {
    /// Appends `v` as a varint.
    pub fn var(mut self, mut v: u64) -> Self {
        loop {
            let low = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(low);
                return self;
            }
            self.0.push(low | 0x80);
        }
    }

    /// Appends `bytes` as they are.
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// Appends a sequence: its length, then each item as a varint.
    pub fn list(self, items: &[u64]) -> Self {
        items
            .iter()
            .fold(self.var(items.len() as u64), |e, &i| e.var(i))
    }

    /// The bytes.
    pub fn done(self) -> Vec<u8> {
        self.0
    }
}

/// A hello as courier sends it (accepting fds), for protocol `name`
/// version `version` with receive limit `limit`.
pub fn hello(name: &[u8], version: u32, limit: u64) -> Vec<u8> {
    let mut h = b"CRHS".to_vec();
    h.push(WIRE_VERSION);
    h.push(1); // accepts fds
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&limit.to_le_bytes());
    h.push(name.len() as u8);
    h.extend_from_slice(name);
    h
}

/// The hello a courier end with `config` sends, captured from a handshake
/// with one: what a raw peer sends to pass the handshake.
pub fn captured_hello(config: Config) -> Vec<u8> {
    let (a, b) = SeqPacketSocket::pair().expect("socketpair");
    let ours = std::thread::spawn(move || Endpoint::<(), ()>::handshake(a, config).map(drop));
    let mut buf = [0; 512];
    let n = b.recv_timeout(&mut buf, CHILD_TIMEOUT).expect("a hello");
    b.send(&buf[..n]).expect("echo the hello");
    ours.join().expect("thread").expect("handshake");
    buf[..n].to_vec()
}

/// The frame a courier sender makes of `value`, with its fds: what a raw
/// peer then sends where a courier sender would refuse to.
pub fn captured_frame<T: Serialize>(value: T) -> (Vec<u8>, Vec<OwnedFd>) {
    let (a, b) = SeqPacketSocket::pair().expect("socketpair");
    let tx = Sender::<T>::from_socket(a, Config::new());
    tx.send(value).expect("encode");
    let mut buf = vec![0; 1 << 17];
    let mut fds = Vec::new();
    let got = b
        .recv_with_fds(&mut buf, &mut fds, MAX_FDS)
        .expect("recv the frame");
    buf.truncate(got.len);
    (buf, fds)
}

/// Sends `bytes` with `fds` as one message (a zero-length one by a raw
/// `sendmsg`, which courier's transport refuses to send), waiting at most
/// `wait` for room.
pub fn send_frame<K: Kind>(
    sock: &Socket<K>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    wait: Duration,
) -> std::io::Result<()> {
    if !bytes.is_empty() {
        let bufs = [IoSlice::new(bytes)];
        let sent = sock.send_msg(&SendMsg::new(&bufs).with_fds(fds), Wait::timeout(wait))?;
        assert_eq!(sent, bytes.len(), "short send");
        return Ok(());
    }
    let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let deadline = Instant::now() + wait;
    loop {
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        match nixsock::sendmsg::<()>(sock.as_raw_fd(), &[], &cmsgs, flags, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(e.into()),
        }
    }
}
