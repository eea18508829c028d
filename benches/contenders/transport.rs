//! courier-transport used directly: `SeqPacketSocket` `send`/`recv`, and
//! `send_msg`/`recv_with_fds` for fds, with the same packet size and
//! buffers as raw SEQPACKET. What the typed layer adds on top of this is
//! encoding, validation and the frame header.

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use courier::transport::{SendMsg, SeqPacketSocket, Wait};

use super::raw_socket::{CHUNK, SOCK_BUF};
use super::{Cmd, Contender, Kind, Payloads, Reaped, CMD_LEN};

const MAX_FDS: usize = 253;

fn configure(sock: &SeqPacketSocket) {
    sock.set_send_buffer_size(SOCK_BUF).expect("SO_SNDBUF");
    sock.set_recv_buffer_size(SOCK_BUF).expect("SO_RCVBUF");
    assert!(sock.max_message_len().expect("max_message_len") >= CHUNK);
}

fn send_payload(sock: &SeqPacketSocket, data: &[u8]) {
    for chunk in data.chunks(CHUNK) {
        assert_eq!(sock.send(chunk).expect("send"), chunk.len());
    }
}

/// As [`super::raw_socket::recv_payload`].
fn recv_payload(sock: &SeqPacketSocket, buf: &mut [u8], size: usize) -> bool {
    let mut at = 0;
    while at < size {
        let want = CHUNK.min(size - at);
        let n = sock.recv(&mut buf[at..at + want]).expect("recv");
        if n == 0 && at == 0 {
            return false;
        }
        assert_eq!(n, want, "unexpected packet length");
        at += n;
    }
    true
}

fn send_with_fds(sock: &SeqPacketSocket, word: [u8; 8], fds: &[BorrowedFd<'_>]) {
    let bufs = [IoSlice::new(&word)];
    let n = sock
        .send_msg(&SendMsg::new(&bufs).with_fds(fds), Wait::Block)
        .expect("send_msg");
    assert_eq!(n, 8);
}

/// The parent side.
pub struct TransportSocket {
    sock: SeqPacketSocket,
    buf: Vec<u8>,
    payloads: Payloads<Vec<u8>>,
    dev_null: Vec<OwnedFd>,
    received: Vec<OwnedFd>,
    child: Reaped,
}

impl TransportSocket {
    /// Spawns the child with its socket end as stdin.
    pub fn start() -> Self {
        let (ours, theirs) = SeqPacketSocket::pair().expect("socketpair");
        configure(&ours);
        configure(&theirs);
        let child = super::child_command("transport")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .spawn()
            .expect("spawn courier-transport child");
        TransportSocket {
            sock: ours,
            buf: super::receive_buffer(),
            payloads: Payloads::default(),
            dev_null: super::dev_null_fds(MAX_FDS),
            received: Vec::with_capacity(MAX_FDS),
            child: Reaped(child),
        }
    }

    fn command(&self, cmd: Cmd) {
        assert_eq!(self.sock.send(&cmd.encode()).expect("send"), CMD_LEN);
    }
}

impl Contender for TransportSocket {
    fn kind(&self) -> Kind {
        Kind::Transport
    }

    fn rtt_small(&mut self, iters: u64) -> Duration {
        self.command(Cmd::Echo {
            size: 8,
            count: iters,
        });
        let mut word = [0u8; 8];
        let start = Instant::now();
        for i in 0..iters {
            self.sock.send(&i.to_le_bytes()).expect("send");
            assert!(recv_payload(&self.sock, &mut word, 8), "child gone");
            assert_eq!(u64::from_le_bytes(word), i);
        }
        start.elapsed()
    }

    fn rtt_bytes(&mut self, size: usize, iters: u64) -> Duration {
        self.command(Cmd::Echo { size, count: iters });
        let payload = self.payloads.get(size, |v| v);
        let start = Instant::now();
        for _ in 0..iters {
            send_payload(&self.sock, payload);
            assert!(recv_payload(&self.sock, &mut self.buf, size), "child gone");
        }
        let elapsed = start.elapsed();
        assert_eq!(self.buf[size - 1], payload[size - 1]);
        elapsed
    }

    fn rtt_fds(&mut self, fds: usize, iters: u64) -> Duration {
        self.command(Cmd::EchoFds { fds, count: iters });
        let out: Vec<BorrowedFd<'_>> = self.dev_null[..fds].iter().map(|f| f.as_fd()).collect();
        let mut word = [0u8; 8];
        let start = Instant::now();
        for i in 0..iters {
            send_with_fds(&self.sock, i.to_le_bytes(), &out);
            let got = self
                .sock
                .recv_with_fds(&mut word, &mut self.received, MAX_FDS)
                .expect("recv_with_fds");
            assert!(got.len == 8 && got.fds == fds, "child gone");
            self.received.clear(); // closes them
        }
        start.elapsed()
    }

    fn tput(&mut self, size: usize, count: u64) -> Duration {
        self.command(Cmd::Sink { size, count });
        let payload = self.payloads.get(size, |v| v);
        let start = Instant::now();
        for _ in 0..count {
            send_payload(&self.sock, payload);
        }
        let mut ack = [0u8; 8];
        assert!(recv_payload(&self.sock, &mut ack, 8), "child gone");
        let elapsed = start.elapsed();
        assert_eq!(u64::from_le_bytes(ack), count);
        elapsed
    }

    fn pids(&self) -> Vec<u32> {
        vec![self.child.0.id()]
    }
}

/// The child: commands until end of stream.
pub fn child() {
    let sock = SeqPacketSocket::try_from(super::stdin_fd()).expect("a SEQPACKET stdin");
    let mut buf = super::receive_buffer();
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(MAX_FDS);
    let mut cmd = [0u8; CMD_LEN];
    while recv_payload(&sock, &mut cmd, CMD_LEN) {
        match Cmd::decode(&cmd) {
            Cmd::Echo { size, count } => {
                for _ in 0..count {
                    if !recv_payload(&sock, &mut buf, size) {
                        return;
                    }
                    send_payload(&sock, &buf[..size]);
                }
            }
            Cmd::Sink { size, count } => {
                for _ in 0..count {
                    if !recv_payload(&sock, &mut buf, size) {
                        return;
                    }
                }
                send_payload(&sock, &count.to_le_bytes());
            }
            Cmd::EchoFds { fds: n, count } => {
                let mut word = [0u8; 8];
                for _ in 0..count {
                    let got = sock
                        .recv_with_fds(&mut word, &mut fds, MAX_FDS)
                        .expect("recv_with_fds");
                    if got.len == 0 && got.fds == 0 {
                        return;
                    }
                    assert_eq!(got.fds, n);
                    let back: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
                    send_with_fds(&sock, word, &back);
                    drop(back);
                    fds.clear(); // closes them
                }
            }
            Cmd::EchoNoSignal { .. } => panic!("a pipe command"),
        }
    }
}
