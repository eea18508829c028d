//! The `FrameTransport` contract, as one generic suite run over every
//! implementation (SEQPACKET and DGRAM socketpairs): frames in order with
//! their fds, truncation reported and survivable, end of stream after the
//! queue drains (SEQPACKET), `ECONNRESET` skipped while draining, and a raw
//! empty message from a live peer not mistaken for end of stream.

mod common;

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use courier_transport::{DatagramSocket, FrameTransport, SeqPacketSocket, TransportError, Wait};

const T: Duration = Duration::from_secs(5);

fn frames_arrive_in_order_with_fds<F: FrameTransport>(a: &F, b: &F) {
    assert!(a.supports_fds());
    assert!(a.max_frame_len().unwrap() >= 64 * 1024);
    let file = std::fs::File::open("/dev/null").unwrap();
    for i in 0u32..50 {
        let fds = if i % 5 == 0 {
            vec![file.as_fd(); (i / 5) as usize]
        } else {
            Vec::new()
        };
        let head = i.to_le_bytes();
        a.send_frame(
            &[IoSlice::new(&head), IoSlice::new(b"-body")],
            &fds,
            Wait::timeout(T),
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        let n = b
            .recv_frame(&mut buf, 64, &mut got, 16, Wait::timeout(T))
            .unwrap()
            .expect("frame");
        assert_eq!(&buf[..4], &head);
        assert_eq!(&buf[4..n], b"-body");
        assert_eq!(got.len(), fds.len(), "frame {i}");
    }
}

fn truncation_is_an_error_and_the_next_frame_arrives<F: FrameTransport>(a: &F, b: &F) {
    a.send_frame(&[IoSlice::new(&[7; 100])], &[], Wait::Block)
        .unwrap();
    a.send_frame(&[IoSlice::new(b"next")], &[], Wait::Block)
        .unwrap();
    let mut small = Vec::new();
    let err = b
        .recv_frame(&mut small, 10, &mut Vec::new(), 0, Wait::timeout(T))
        .unwrap_err();
    assert!(
        matches!(
            TransportError::of(&err),
            Some(TransportError::Truncated {
                len: 100,
                capacity: 10,
                ..
            })
        ),
        "{err}"
    );
    let n = b
        .recv_frame(&mut small, 10, &mut Vec::new(), 0, Wait::timeout(T))
        .unwrap();
    assert_eq!(n, Some(4));
    assert_eq!(&small[..4], b"next");
}

fn an_empty_wait_times_out<F: FrameTransport>(b: &F) {
    let err = b
        .recv_frame(&mut Vec::new(), 8, &mut Vec::new(), 0, Wait::Never)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    let err = b
        .recv_frame(
            &mut Vec::new(),
            8,
            &mut Vec::new(),
            0,
            Wait::timeout(Duration::from_millis(2)),
        )
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
}

fn suite<F: FrameTransport>(pair: impl Fn() -> (F, F)) {
    let (a, b) = pair();
    frames_arrive_in_order_with_fds(&a, &b);
    frames_arrive_in_order_with_fds(&b, &a);
    truncation_is_an_error_and_the_next_frame_arrives(&a, &b);
    an_empty_wait_times_out(&b);
    assert_eq!(a.readable_fd().as_raw_fd(), a.writable_fd().as_raw_fd());
}

#[test]
fn seqpacket_socketpair_conforms() {
    suite(|| SeqPacketSocket::pair().unwrap());
}

#[test]
fn datagram_socketpair_conforms() {
    suite(|| DatagramSocket::pair().unwrap());
}

#[test]
fn seqpacket_end_of_stream_comes_after_the_queue_drains() {
    let (a, b) = SeqPacketSocket::pair().unwrap();
    for i in 0u8..3 {
        a.send_frame(&[IoSlice::new(&[i])], &[], Wait::Block)
            .unwrap();
    }
    // b sent something a never read: closing a makes b's first recv fail
    // with ECONNRESET, which the transport skips.
    b.send_frame(&[IoSlice::new(b"unread")], &[], Wait::Block)
        .unwrap();
    drop(a);
    let mut buf = Vec::new();
    for i in 0u8..3 {
        assert_eq!(
            b.recv_frame(&mut buf, 8, &mut Vec::new(), 0, Wait::timeout(T))
                .unwrap(),
            Some(1)
        );
        assert_eq!(buf[0], i);
    }
    assert_eq!(
        b.recv_frame(&mut buf, 8, &mut Vec::new(), 0, Wait::timeout(T))
            .unwrap(),
        None
    );
    assert_eq!(
        b.recv_frame(&mut buf, 8, &mut Vec::new(), 0, Wait::timeout(T))
            .unwrap(),
        None,
        "EOF is sticky"
    );
}

#[test]
fn the_raw_socket_does_report_econnreset_first() {
    // The kernel behaviour the frame transport hides, shown on the raw API.
    let (a, b) = SeqPacketSocket::pair().unwrap();
    a.send(b"queued").unwrap();
    b.send(b"unread").unwrap();
    drop(a);
    let err = b.recv(&mut [0; 8]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(b.recv(&mut [0; 8]).unwrap(), 6);
    assert_eq!(b.recv(&mut [0; 8]).unwrap(), 0);
}

#[test]
fn a_raw_empty_message_from_a_live_peer_is_not_end_of_stream() {
    let (a, b) = SeqPacketSocket::pair().unwrap();
    // courier refuses to send one; a raw peer can.
    nix::sys::socket::send(a.as_raw_fd(), &[], nix::sys::socket::MsgFlags::empty()).unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        b.recv_frame(&mut buf, 8, &mut Vec::new(), 0, Wait::timeout(T))
            .unwrap(),
        Some(0)
    );
    a.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        b.recv_frame(&mut buf, 8, &mut Vec::new(), 0, Wait::timeout(T))
            .unwrap(),
        None
    );
}

#[test]
fn shutdown_write_gives_eof_despite_a_surviving_copy() {
    let (a, b) = SeqPacketSocket::pair().unwrap();
    let stray = a.try_clone().unwrap(); // a copy that survives, as in a leaked child
    a.send_frame(&[IoSlice::new(b"last")], &[], Wait::Block)
        .unwrap();
    a.shutdown(std::net::Shutdown::Write).unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        b.recv_frame(&mut buf, 8, &mut Vec::new(), 0, Wait::timeout(T))
            .unwrap(),
        Some(4)
    );
    assert_eq!(
        b.recv_frame(&mut buf, 8, &mut Vec::new(), 0, Wait::timeout(T))
            .unwrap(),
        None
    );
    drop(stray);
}
