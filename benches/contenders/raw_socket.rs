//! Raw SEQPACKET: a socketpair driven with plain nix calls, the baseline
//! for everything courier does over SEQPACKET.
//!
//! Payloads larger than [`CHUNK`] go as several packets of at most
//! [`CHUNK`] bytes (one SEQPACKET message must fit the send buffer, and no
//! skb holds much more than 4 MiB); both sides know the size from the
//! command, so no per-message header is sent.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recv, recvmsg, send, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType,
};

use super::{Cmd, Contender, Kind, Payloads, Reaped, CMD_LEN};

/// The largest packet a payload is split into. Measured one-way (1 MiB and
/// 16 MiB payloads, split CPUs, 8 MiB socket buffers) with 64 KiB to 4 MiB
/// packets: 512 KiB and 1 MiB were the fastest, 1 MiB slightly ahead at
/// 16 MiB; the machine was too noisy to separate them further.
pub const CHUNK: usize = 1 << 20;

/// The SO_SNDBUF/SO_RCVBUF asked for (the kernel doubles it, capped by
/// `net.core.wmem_max`/`rmem_max`).
pub const SOCK_BUF: usize = 4 << 20;

/// The most fds one message carries (SCM_MAX_FD).
const MAX_FDS: usize = 253;

/// A SEQPACKET socketpair with large buffers; both close-on-exec.
pub fn pair() -> (OwnedFd, OwnedFd) {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair");
    for fd in [&a, &b] {
        setsockopt(fd, sockopt::SndBuf, &SOCK_BUF).expect("SO_SNDBUF");
        setsockopt(fd, sockopt::RcvBuf, &SOCK_BUF).expect("SO_RCVBUF");
    }
    (a, b)
}

/// The send buffer a [`pair`] socket gets (SO_SNDBUF as the kernel
/// reports it).
pub fn effective_send_buffer() -> usize {
    let (a, _b) = pair();
    nix::sys::socket::getsockopt(&a, sockopt::SndBuf).expect("SO_SNDBUF")
}

/// Sends `data` as packets of at most [`CHUNK`] bytes.
pub fn send_payload(fd: RawFd, data: &[u8]) {
    for chunk in data.chunks(CHUNK) {
        let n = send(fd, chunk, MsgFlags::MSG_NOSIGNAL).expect("send");
        assert_eq!(n, chunk.len(), "short SEQPACKET send");
    }
}

/// Receives a `size`-byte payload sent by [`send_payload`] into
/// `buf[..size]`; `false` at end of stream before its first packet.
pub fn recv_payload(fd: RawFd, buf: &mut [u8], size: usize) -> bool {
    let mut at = 0;
    while at < size {
        let want = CHUNK.min(size - at);
        let n = recv(fd, &mut buf[at..at + want], MsgFlags::empty()).expect("recv");
        if n == 0 && at == 0 {
            return false;
        }
        assert_eq!(n, want, "unexpected packet length");
        at += n;
    }
    true
}

/// Sends 8 bytes with `fds` as SCM_RIGHTS.
fn send_with_fds(fd: RawFd, word: [u8; 8], fds: &[RawFd]) {
    let iov = [IoSlice::new(&word)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    let n = sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None).expect("sendmsg");
    assert_eq!(n, 8);
}

/// Receives 8 bytes and their fds (appended to `fds`, close-on-exec);
/// `false` at end of stream.
fn recv_with_fds(fd: RawFd, cmsg: &mut Vec<u8>, fds: &mut Vec<RawFd>) -> bool {
    let mut word = [0u8; 8];
    let mut iov = [IoSliceMut::new(&mut word)];
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(cmsg.as_mut_slice()),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .expect("recvmsg");
    for c in msg.cmsgs().expect("cmsgs") {
        if let ControlMessageOwned::ScmRights(got) = c {
            fds.extend_from_slice(&got);
        }
    }
    assert!(
        !msg.flags
            .intersects(MsgFlags::MSG_CTRUNC | MsgFlags::MSG_TRUNC),
        "truncated"
    );
    msg.bytes != 0 || !fds.is_empty()
}

/// Closes fds received as raw numbers.
fn close_all(fds: &mut Vec<RawFd>) {
    for fd in fds.drain(..) {
        nix::unistd::close(fd).expect("close");
    }
}

/// The parent side.
pub struct RawSocket {
    sock: OwnedFd,
    buf: Vec<u8>,
    payloads: Payloads<Vec<u8>>,
    dev_null: Vec<OwnedFd>,
    cmsg: Vec<u8>,
    received: Vec<RawFd>,
    child: Reaped,
}

impl RawSocket {
    /// Spawns the child with its socket end as stdin.
    pub fn start() -> Self {
        let (ours, theirs) = pair();
        let child = super::child_command("raw-seqpacket")
            .stdin(Stdio::from(theirs))
            .spawn()
            .expect("spawn raw SEQPACKET child");
        RawSocket {
            sock: ours,
            buf: super::receive_buffer(),
            payloads: Payloads::default(),
            dev_null: super::dev_null_fds(MAX_FDS),
            cmsg: nix::cmsg_space!([RawFd; MAX_FDS]),
            received: Vec::with_capacity(MAX_FDS),
            child: Reaped(child),
        }
    }

    fn command(&self, cmd: Cmd) {
        let n = send(self.sock.as_raw_fd(), &cmd.encode(), MsgFlags::MSG_NOSIGNAL).expect("send");
        assert_eq!(n, CMD_LEN);
    }
}

impl Contender for RawSocket {
    fn kind(&self) -> Kind {
        Kind::RawSeqPacket
    }

    fn rtt_small(&mut self, iters: u64) -> Duration {
        let fd = self.sock.as_raw_fd();
        self.command(Cmd::Echo {
            size: 8,
            count: iters,
        });
        let mut word = [0u8; 8];
        let start = Instant::now();
        for i in 0..iters {
            send_payload(fd, &i.to_le_bytes());
            assert!(recv_payload(fd, &mut word, 8), "child gone");
            assert_eq!(u64::from_le_bytes(word), i);
        }
        start.elapsed()
    }

    fn rtt_bytes(&mut self, size: usize, iters: u64) -> Duration {
        let fd = self.sock.as_raw_fd();
        self.command(Cmd::Echo { size, count: iters });
        let payload = self.payloads.get(size, |v| v);
        let start = Instant::now();
        for _ in 0..iters {
            send_payload(fd, payload);
            assert!(recv_payload(fd, &mut self.buf, size), "child gone");
        }
        let elapsed = start.elapsed();
        assert_eq!(self.buf[size - 1], payload[size - 1]);
        elapsed
    }

    fn rtt_fds(&mut self, fds: usize, iters: u64) -> Duration {
        let fd = self.sock.as_raw_fd();
        self.command(Cmd::EchoFds { fds, count: iters });
        let out: Vec<RawFd> = self.dev_null[..fds].iter().map(|f| f.as_raw_fd()).collect();
        let start = Instant::now();
        for i in 0..iters {
            send_with_fds(fd, i.to_le_bytes(), &out);
            assert!(
                recv_with_fds(fd, &mut self.cmsg, &mut self.received),
                "child gone"
            );
            assert_eq!(self.received.len(), fds);
            close_all(&mut self.received);
        }
        start.elapsed()
    }

    fn tput(&mut self, size: usize, count: u64) -> Duration {
        let fd = self.sock.as_raw_fd();
        self.command(Cmd::Sink { size, count });
        let payload = self.payloads.get(size, |v| v);
        let start = Instant::now();
        for _ in 0..count {
            send_payload(fd, payload);
        }
        let mut ack = [0u8; 8];
        assert!(recv_payload(fd, &mut ack, 8), "child gone");
        let elapsed = start.elapsed();
        assert_eq!(u64::from_le_bytes(ack), count);
        elapsed
    }

    fn pids(&self) -> Vec<u32> {
        vec![self.child.0.id()]
    }
}

/// The child: runs commands until end of stream.
pub fn child() {
    let sock = super::stdin_fd();
    let fd = sock.as_fd().as_raw_fd();
    let mut buf = super::receive_buffer();
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut fds = Vec::with_capacity(MAX_FDS);
    let mut cmd = [0u8; CMD_LEN];
    while recv_payload(fd, &mut cmd, CMD_LEN) {
        match Cmd::decode(&cmd) {
            Cmd::Echo { size, count } => {
                for _ in 0..count {
                    if !recv_payload(fd, &mut buf, size) {
                        return;
                    }
                    send_payload(fd, &buf[..size]);
                }
            }
            Cmd::Sink { size, count } => {
                for _ in 0..count {
                    if !recv_payload(fd, &mut buf, size) {
                        return;
                    }
                }
                send_payload(fd, &count.to_le_bytes());
            }
            Cmd::EchoFds { fds: n, count } => {
                for _ in 0..count {
                    if !recv_with_fds(fd, &mut cmsg, &mut fds) {
                        return;
                    }
                    assert_eq!(fds.len(), n);
                    send_with_fds(fd, [0; 8], &fds);
                    close_all(&mut fds);
                }
            }
            Cmd::EchoNoSignal { .. } => panic!("a pipe command"),
        }
    }
}
