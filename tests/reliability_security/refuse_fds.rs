//! A channel that refuses fds (`Config::accept_fds(false)`): SEQPACKET,
//! DGRAM and listener-accepted receivers are sent genuine frames carrying
//! fds by a raw peer that bypasses courier's sender-side check. Frames
//! queued before the end refused fds give `FdsNotAccepted` and their fds
//! are closed (no reader of the pipes they were is left anywhere); frames
//! sent afterwards are refused by the kernel (`SO_PASSRIGHTS`) where it
//! can; a frame without fds still arrives; a courier sender refuses such a
//! value up front and hands it back.

use std::io::{PipeReader, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use courier::transport::{DatagramSocket, Kind, SeqPacketSocket, Socket, MAX_FDS};
use courier::{ChannelError, Config, Fd, Listener, Receiver, RecvTimeoutError, SendError};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};

use crate::common::{self, CHILD_TIMEOUT};
use crate::config;
use crate::support::fds::new_fds;
use crate::support::figures::Figures;
use crate::support::wire::{captured_frame, captured_hello, send_frame};

/// Values with and without fds.
#[derive(Serialize, Deserialize, Debug)]
enum Msg {
    Text(String),
    Pipes(Vec<Fd<PipeReader>>),
}

/// A pipe whose read end goes in a frame (`copies` fds of it) and whose
/// write end tells whether any reader is left.
struct Probe {
    frame: Vec<u8>,
    fds: Vec<OwnedFd>,
    writer: std::io::PipeWriter,
}

impl Probe {
    fn new(copies: usize) -> Probe {
        let (r, writer) = std::io::pipe().expect("pipe");
        let readers = (0..copies)
            .map(|_| Fd::new(r.try_clone().expect("dup")))
            .collect();
        drop(r);
        let (frame, fds) = captured_frame(Msg::Pipes(readers));
        assert_eq!(fds.len(), copies);
        Probe { frame, fds, writer }
    }

    fn borrowed(&self) -> Vec<BorrowedFd<'_>> {
        self.fds.iter().map(AsFd::as_fd).collect()
    }

    /// Sends the frame with its fds, then closes our copies: the fds in
    /// flight are the pipe's only readers.
    fn send<K: Kind>(mut self, sock: &Socket<K>) -> (std::io::Result<()>, std::io::PipeWriter) {
        let sent = send_frame(sock, &self.frame, &self.borrowed(), CHILD_TIMEOUT);
        self.fds.clear();
        (sent, self.writer)
    }
}

/// Asserts that no reader of the pipe is left anywhere: `POLLERR` at the
/// write end and `EPIPE` on a write.
fn assert_no_reader(mut writer: std::io::PipeWriter, what: &str) {
    let mut fds = [PollFd::new(writer.as_fd(), PollFlags::POLLOUT)];
    nix::poll::poll(&mut fds, PollTimeout::ZERO).expect("poll");
    let revents = fds[0].revents().expect("revents");
    assert!(
        revents.contains(PollFlags::POLLERR),
        "{what}: a reader of the pipe is still open somewhere ({revents:?})"
    );
    // Rust ignores SIGPIPE in its programs: the write fails instead.
    match writer.write(b"x") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => panic!("{what}: expected EPIPE, got {other:?}"),
    }
}

/// Whether this kernel has `SO_PASSRIGHTS` (Linux 6.16+).
fn kernel_refuses_fds() -> bool {
    let (a, _b) = SeqPacketSocket::pair().expect("socketpair");
    a.set_pass_rights(false).expect("SO_PASSRIGHTS")
}

/// The next receive must be `FdsNotAccepted`.
fn expect_not_accepted(result: Result<Msg, RecvTimeoutError>, what: &str) {
    match result {
        Err(RecvTimeoutError::Failed(ChannelError::FdsNotAccepted)) => {}
        other => panic!("{what}: expected FdsNotAccepted, got {other:?}"),
    }
}

/// What one refusing receiver's case saw.
struct Refusal {
    typed: u64,
    closed: usize,
    later: &'static str,
}

/// Queues frames with 1 and 253 fds on `raw`, then makes the receiver that
/// refuses fds from `sock` (with `make`), sends one more frame with an fd
/// and one without, and checks what each gives (see the module docs).
fn refusing_receiver<K: Kind>(
    kind: &str,
    raw: &Socket<K>,
    sock: Socket<K>,
    make: fn(Socket<K>, Config) -> Receiver<Msg>,
    text: &[u8],
    kernel_refuses: bool,
) -> Refusal {
    let (s1, w1) = Probe::new(1).send(raw);
    let (s2, w2) = Probe::new(MAX_FDS).send(raw);
    s1.expect("queue a frame with one fd");
    s2.expect("queue a frame with 253 fds");
    let rx = make(sock, Config::new().accept_fds(false));
    let (s3, w3) = Probe::new(1).send(raw);
    send_frame(raw, text, &[], CHILD_TIMEOUT).expect("send a frame without fds");
    let baseline = common::fd_table();
    let mut typed = 0;
    let mut closed = 0;
    expect_not_accepted(rx.recv_timeout(CHILD_TIMEOUT), &format!("{kind}: one fd"));
    expect_not_accepted(rx.recv_timeout(CHILD_TIMEOUT), &format!("{kind}: 253 fds"));
    typed += 2;
    assert_eq!(
        new_fds(&baseline),
        vec![],
        "{kind}: refused fds stayed open"
    );
    assert_no_reader(w1, &format!("{kind}: one fd"));
    assert_no_reader(w2, &format!("{kind}: 253 fds"));
    closed += 1 + MAX_FDS;
    // Sent after the receiver refused fds: the kernel refuses them.
    let later = match s3 {
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => {
            assert!(kernel_refuses, "{kind}: EPERM without SO_PASSRIGHTS");
            "EPERM"
        }
        Ok(_) => {
            assert!(
                !kernel_refuses,
                "{kind}: the kernel has SO_PASSRIGHTS, yet took fds for an end refusing them"
            );
            expect_not_accepted(rx.recv_timeout(CHILD_TIMEOUT), &format!("{kind}: later"));
            typed += 1;
            closed += 1;
            "FdsNotAccepted"
        }
        Err(e) => panic!("{kind}: unexpected send error {e}"),
    };
    assert_no_reader(w3, &format!("{kind}: the frame sent later"));
    match rx.recv_timeout(CHILD_TIMEOUT) {
        Ok(Msg::Text(t)) => assert_eq!(t, "no fds here"),
        other => panic!("{kind}: the frame without fds: {other:?}"),
    }
    assert_eq!(new_fds(&baseline), vec![], "{kind}: fds left open");
    Refusal {
        typed,
        closed,
        later,
    }
}

#[test]
fn a_channel_refusing_fds_rejects_frames_carrying_them_and_closes_them() {
    let _lock = common::fd_lock();
    let mut figures = Figures::new("security");
    figures.add("part", "accept_fds_false");
    let refuse = Config::new().accept_fds(false);
    let kernel_refuses = kernel_refuses_fds();
    let (text, _) = captured_frame(Msg::Text("no fds here".into()));
    let mut closed = 0;
    let mut typed = 0;

    // SEQPACKET and DGRAM receivers, frames queued before they refuse fds
    // (one fd, and the most a frame carries).
    for kind in ["seqpacket", "datagram"] {
        let case = if kind == "seqpacket" {
            let (raw, sock) = SeqPacketSocket::pair().expect("socketpair");
            refusing_receiver(
                kind,
                &raw,
                sock,
                Receiver::from_socket,
                &text,
                kernel_refuses,
            )
        } else {
            let (raw, sock) = DatagramSocket::pair().expect("socketpair");
            refusing_receiver(
                kind,
                &raw,
                sock,
                Receiver::from_datagram_socket,
                &text,
                kernel_refuses,
            )
        };
        typed += case.typed;
        closed += case.closed;
        figures
            .add(&format!("{kind}_queued_before"), "FdsNotAccepted,closed")
            .add(&format!("{kind}_sent_after"), case.later)
            .add(&format!("{kind}_without_fds"), "received");
    }

    // An endpoint accepted by a listener that refuses fds: frames queued
    // with the handshake, before the accept.
    let listener =
        Listener::<Msg, Msg>::bind_random(config().accept_fds(false)).expect("bind listener");
    let addr = listener.local_addr().expect("local_addr");
    let hello = captured_hello(config());
    let raw = SeqPacketSocket::connect(&addr).expect("connect");
    send_frame(&raw, &hello, &[], CHILD_TIMEOUT).expect("send hello");
    let (s1, w1) = Probe::new(3).send(&raw);
    s1.expect("queue a frame with fds before the accept");
    let baseline = common::fd_table();
    let ep = listener.accept_timeout(CHILD_TIMEOUT).expect("accept");
    let mut their_hello = [0; 512];
    raw.recv_timeout(&mut their_hello, CHILD_TIMEOUT)
        .expect("the listener's hello");
    expect_not_accepted(ep.recv_timeout(CHILD_TIMEOUT), "listener: queued fds");
    typed += 1;
    closed += 3;
    assert_no_reader(w1, "listener: queued fds");
    let (s2, w2) = Probe::new(1).send(&raw);
    let later = match s2 {
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => "EPERM",
        Ok(_) => {
            assert!(!kernel_refuses, "listener: fds taken despite SO_PASSRIGHTS");
            expect_not_accepted(ep.recv_timeout(CHILD_TIMEOUT), "listener: later");
            typed += 1;
            "FdsNotAccepted"
        }
        Err(e) => panic!("listener: unexpected send error {e}"),
    };
    assert_no_reader(w2, "listener: the frame sent later");
    send_frame(&raw, &text, &[], CHILD_TIMEOUT).expect("send text");
    match ep.recv_timeout(CHILD_TIMEOUT) {
        Ok(Msg::Text(t)) => assert_eq!(t, "no fds here"),
        other => panic!("listener: the frame without fds: {other:?}"),
    }
    let mut left = new_fds(&baseline);
    // The accepted connection is the one new fd the endpoint holds.
    left.retain(|(fd, _)| *fd != ep.as_fd().as_raw_fd());
    assert_eq!(left, vec![], "listener: fds left open");
    figures
        .add("listener_queued_before", "FdsNotAccepted,closed")
        .add("listener_sent_after", later);

    // A courier sender refuses such a value up front and hands it back.
    let (tx, rx) = refuse.channel::<Msg>().expect("channel");
    let (r, _w) = std::io::pipe().expect("pipe");
    let raw_fd = r.as_raw_fd();
    match tx.send(Msg::Pipes(vec![Fd::new(r)])) {
        Err(SendError::Failed(Msg::Pipes(v), ChannelError::FdsRefused { count: 1 })) => {
            assert_eq!(v[0].as_raw_fd(), raw_fd, "another fd came back");
        }
        other => panic!("sender check: expected Failed(FdsRefused), got {other:?}"),
    }
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(10)),
        Err(RecvTimeoutError::Timeout)
    ));
    typed += 1;
    figures
        .add("sender_check", "FdsRefused,value_back")
        .add("kernel_so_passrights", kernel_refuses)
        .add("typed_errors", typed)
        .add("fds_closed_on_arrival", closed)
        .add("leaks", 0);
    figures.report();
}
