//! Sizes and truncation: the largest message (`SO_SNDBUF - 32`, and the
//! kernel's ~4 MiB ceiling), `peek_len`, receives into too-small buffers or
//! with too few fd slots (errors, never silent loss, no leaked fds), and the
//! 253-fd limit per message.
//!
//! Every test here holds `common::fd_lock()`: most of them compare fd
//! tables, and the others open fds that would disturb those comparisons.

mod common;

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use courier_transport::{SeqPacketSocket, TransportError, Wait, KERNEL_MESSAGE_CEILING, MAX_FDS};

/// An upper bound for operations that must succeed; it only catches hangs.
const HANG: Duration = Duration::from_secs(5);

/// `len` bytes of a pattern that shows reordering or truncation.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Sends `msg` on `a`, receives it on `b` into a buffer of exactly its size,
/// and checks it arrived whole.
#[track_caller]
fn round_trip(a: &SeqPacketSocket, b: &SeqPacketSocket, msg: &[u8]) {
    assert_eq!(
        a.send_timeout(msg, HANG).expect("send"),
        msg.len(),
        "sent whole"
    );
    let mut buf = vec![0u8; msg.len()];
    let n = b.recv_timeout(&mut buf, HANG).expect("recv");
    assert_eq!(n, msg.len(), "received whole");
    assert!(buf == msg, "message of {} bytes arrived altered", msg.len());
}

/// Asserts that `err` is `MessageTooLarge { size, limit }`, reported as
/// InvalidInput and with both numbers in its text.
#[track_caller]
fn assert_too_large(err: &io::Error, size: usize, limit: usize) {
    match TransportError::of(err) {
        Some(TransportError::MessageTooLarge { size: s, limit: l }) => {
            assert_eq!(
                (*s, *l),
                (size, limit),
                "MessageTooLarge names the size and the limit"
            )
        }
        other => panic!("expected MessageTooLarge, got {other:?} from {err:?}"),
    }
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(
        err.raw_os_error(),
        None,
        "a courier error, not a bare errno"
    );
    let text = err.to_string();
    assert!(
        text.contains(&size.to_string()) && text.contains(&limit.to_string()),
        "error text names both numbers: {text}"
    );
}

/// Asserts that nothing is queued on `b`.
#[track_caller]
fn assert_nothing_queued(b: &SeqPacketSocket) {
    let mut buf = [0u8; 8];
    match b.try_recv(&mut buf) {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "nothing queued: {e:?}"),
        Ok(n) => panic!("nothing should have been sent, got {n} bytes"),
    }
}

fn dev_null() -> File {
    File::open("/dev/null").expect("open /dev/null")
}

#[test]
fn default_limit_is_sndbuf_minus_32() {
    let _lock = common::fd_lock();
    let (a, b) = SeqPacketSocket::pair().expect("pair");
    let sndbuf = a.send_buffer_size().expect("send_buffer_size");
    let max = a.max_message_len().expect("max_message_len");
    assert_eq!(max, sndbuf - 32, "max_message_len with SO_SNDBUF {sndbuf}");

    round_trip(&a, &b, &pattern(max));

    let err = a
        .send(&pattern(max + 1))
        .expect_err("one byte over the limit");
    assert_too_large(&err, max + 1, max);
    assert_nothing_queued(&b);
}

#[test]
fn larger_send_buffer_raises_the_limit() {
    let _lock = common::fd_lock();
    let (a, b) = SeqPacketSocket::pair().expect("pair");
    let before = a.max_message_len().expect("max_message_len");
    a.set_send_buffer_size(1 << 20)
        .expect("set_send_buffer_size");
    let sndbuf = a.send_buffer_size().expect("send_buffer_size");
    let max = a.max_message_len().expect("max_message_len");
    assert!(
        max > before,
        "limit rose from {before} (SO_SNDBUF now {sndbuf}, limit {max})"
    );
    assert_eq!(max, (sndbuf - 32).min(KERNEL_MESSAGE_CEILING));

    // Measured: the receiver needs no larger SO_RCVBUF. AF_UNIX charges a
    // queued message to the SENDER's buffer; the receiver's is not consulted.
    let rcvbuf = b.recv_buffer_size().expect("recv_buffer_size");
    assert!(
        rcvbuf < max,
        "test premise: receive buffer {rcvbuf} smaller than the message {max}"
    );
    round_trip(&a, &b, &pattern(max));

    let err = a
        .send(&pattern(max + 1))
        .expect_err("one byte over the raised limit");
    assert_too_large(&err, max + 1, max);
}

#[test]
fn above_the_kernel_ceiling_is_message_too_large_not_enobufs() {
    let _lock = common::fd_lock();
    let (a, b) = SeqPacketSocket::pair().expect("pair");
    a.set_send_buffer_size(64 << 20)
        .expect("set_send_buffer_size");
    let sndbuf = a.send_buffer_size().expect("send_buffer_size");
    let max = a.max_message_len().expect("max_message_len");
    assert!(
        max <= KERNEL_MESSAGE_CEILING,
        "limit {max} capped at the ceiling"
    );
    if sndbuf - 32 >= KERNEL_MESSAGE_CEILING {
        assert_eq!(
            max, KERNEL_MESSAGE_CEILING,
            "SO_SNDBUF {sndbuf} is above the ceiling"
        );
    }

    let size = 6 << 20;
    let err = a.send(&vec![0u8; size]).expect_err("6 MiB in one message");
    assert_ne!(
        err.raw_os_error(),
        Some(nix::libc::ENOBUFS),
        "bare ENOBUFS: {err:?}"
    );
    assert_too_large(&err, size, max);
    assert_nothing_queued(&b);

    // One byte above the documented ceiling is refused too, although the
    // kernel itself would take up to ~4,263,616 bytes on x86-64.
    if max == KERNEL_MESSAGE_CEILING {
        let err = a.send(&vec![0u8; max + 1]).expect_err("ceiling + 1");
        assert_too_large(&err, max + 1, max);
        assert_nothing_queued(&b);
    }

    // The promised limit itself still goes through.
    round_trip(&a, &b, &pattern(max));
}

#[test]
fn peek_len_reports_without_consuming_or_installing_fds() {
    let _lock = common::fd_lock();
    let (a, b) = SeqPacketSocket::pair().expect("pair");
    let file = dev_null();

    assert_eq!(
        b.peek_len(Wait::Never).map_err(|e| e.kind()),
        Err(io::ErrorKind::WouldBlock),
        "peek_len on an empty socket"
    );

    a.send(b"first message").expect("send");
    a.send_with_fds(b"with fd", &[file.as_fd()])
        .expect("send_with_fds");
    let baseline = common::fd_table();

    assert_eq!(b.peek_len(Wait::Never).expect("peek"), 13);
    assert_eq!(
        b.peek_len(Wait::Never).expect("peek again"),
        13,
        "peek does not consume"
    );
    let mut buf = [0u8; 32];
    let n = b.recv(&mut buf).expect("recv");
    assert_eq!(&buf[..n], b"first message", "recv gets the peeked message");

    for _ in 0..3 {
        assert_eq!(b.peek_len(Wait::Never).expect("peek message with fd"), 7);
    }
    assert_eq!(
        common::fd_table(),
        baseline,
        "peeking a message with an fd installed an fd"
    );

    let mut fds = Vec::new();
    let got = b
        .recv_with_fds(&mut buf, &mut fds, 1)
        .expect("recv_with_fds");
    assert_eq!((got.len, got.fds, &buf[..7]), (7, 1, &b"with fd"[..]));
    assert_eq!(fds.len(), 1);
    drop(fds);
    assert_eq!(common::fd_table(), baseline, "fd table back to baseline");
}

#[test]
fn too_small_buffer_is_truncated_error_and_closes_fds() {
    let _lock = common::fd_lock();
    let (a, b) = SeqPacketSocket::pair().expect("pair");
    let file = dev_null();
    let kept: OwnedFd = dev_null().into();
    let baseline = common::fd_table();

    a.send_with_fds(&pattern(100), &[file.as_fd(), file.as_fd()])
        .expect("send_with_fds");
    a.send(b"next").expect("send next");

    let mut small = [0u8; 10];
    let mut fds = vec![kept];
    let err = b
        .recv_with_fds(&mut small, &mut fds, 4)
        .expect_err("100 bytes into 10");
    match TransportError::of(&err) {
        Some(TransportError::Truncated { len, capacity, fds }) => {
            assert_eq!(
                (*len, *capacity, *fds),
                (100, 10, 2),
                "real length, capacity, fds"
            )
        }
        other => panic!("expected Truncated, got {other:?} from {err:?}"),
    }
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(fds.len(), 1, "the caller's fd vector is left as it was");
    assert_eq!(
        common::fd_table(),
        baseline,
        "the truncated message's fds were closed"
    );

    let mut buf = [0u8; 16];
    let n = b.recv_timeout(&mut buf, HANG).expect("the next message");
    assert_eq!(&buf[..n], b"next", "the next message is received normally");
    assert_nothing_queued(&b);
}

#[test]
fn plain_recv_of_a_message_with_fds_is_fds_truncated() {
    let _lock = common::fd_lock();
    let (a, b) = SeqPacketSocket::pair().expect("pair");
    let file = dev_null();
    let baseline = common::fd_table();
    let three = [file.as_fd(), file.as_fd(), file.as_fd()];

    a.send_with_fds(b"three", &three).expect("send_with_fds");
    let mut buf = [0u8; 16];
    let err = b.recv(&mut buf).expect_err("recv accepts no fds");
    match TransportError::of(&err) {
        Some(TransportError::FdsTruncated { limit, .. }) => assert_eq!(*limit, 0),
        other => panic!("expected FdsTruncated, got {other:?} from {err:?}"),
    }
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(
        common::fd_table(),
        baseline,
        "fds of the refused message were closed"
    );

    // Fewer slots than fds: the same error, the same cleanup.
    a.send_with_fds(b"three", &three).expect("send_with_fds");
    let mut fds = Vec::new();
    let err = b
        .recv_with_fds(&mut buf, &mut fds, 2)
        .expect_err("3 fds, room for 2");
    match TransportError::of(&err) {
        Some(TransportError::FdsTruncated { limit, .. }) => assert_eq!(*limit, 2),
        other => panic!("expected FdsTruncated, got {other:?} from {err:?}"),
    }
    assert!(fds.is_empty(), "no fd handed out");
    assert_eq!(
        common::fd_table(),
        baseline,
        "fds of the refused message were closed"
    );

    a.send(b"plain").expect("send");
    let n = b
        .recv_timeout(&mut buf, HANG)
        .expect("the socket still works");
    assert_eq!(&buf[..n], b"plain");
}

#[test]
fn fd_count_limit_is_253() {
    let _lock = common::fd_lock();
    let (a, b) = SeqPacketSocket::pair().expect("pair");
    let file = dev_null();
    let baseline = common::fd_table();

    let too_many: Vec<BorrowedFd<'_>> = vec![file.as_fd(); MAX_FDS + 1];
    let err = a.send_with_fds(b"x", &too_many).expect_err("254 fds");
    assert!(
        matches!(
            TransportError::of(&err),
            Some(TransportError::TooManyFds { count: 254 })
        ),
        "expected TooManyFds {{ count: 254 }}, got {err:?}"
    );
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_nothing_queued(&b);

    assert_eq!(MAX_FDS, 253);
    let most = &too_many[..MAX_FDS];
    a.send_with_fds(b"253", most).expect("253 fds");
    let mut buf = [0u8; 8];
    let mut fds = Vec::new();
    let got = b
        .recv_with_fds(&mut buf, &mut fds, MAX_FDS)
        .expect("recv 253 fds");
    assert_eq!((got.len, got.fds, fds.len()), (3, 253, 253));
    let dev_null_path = std::path::PathBuf::from("/dev/null");
    let table = common::fd_table();
    for (i, fd) in fds.iter().enumerate() {
        common::assert_cloexec(&format!("received fd #{i}"), fd);
        assert_eq!(
            table.get(&fd.as_raw_fd()),
            Some(&dev_null_path),
            "received fd #{i} is /dev/null"
        );
    }
    drop(fds);
    assert_eq!(common::fd_table(), baseline, "fd table back to baseline");
}
