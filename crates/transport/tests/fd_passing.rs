//! Passing file descriptors between real processes: a pipe's write end
//! used by another process, 253 fds in one message, 254 refused, a receive
//! budget too small (the surplus closed, the fd table back to its
//! baseline), and the shared open file description.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use common::CHILD_TIMEOUT;
use courier_transport::{SeqPacketSocket, TransportError, Wait, MAX_FDS};

const ROLES: &[(&str, fn())] = &[("pipe_writer", pipe_writer), ("fd_counter", fd_counter)];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

/// Receives a pipe's write end and writes through it.
fn pipe_writer() {
    let conn = common::connect_to_parent();
    let mut buf = [0; 64];
    let mut fds = Vec::new();
    let got = conn.recv_with_fds(&mut buf, &mut fds, 1).expect("recv");
    assert_eq!(&buf[..got.len], b"write here");
    assert_eq!(fds.len(), 1);
    common::assert_cloexec("received pipe end", &fds[0]);
    let mut pipe = std::fs::File::from(fds.pop().unwrap());
    write!(pipe, "hello from {}", std::process::id()).expect("write to pipe");
    drop(pipe);
    conn.send(b"done").expect("answer");
}

/// Receives 253 fds and answers how many, then receives 253 more with a
/// budget of 3: the error must come and the fd table return to baseline;
/// then a plain message still arrives.
fn fd_counter() {
    let conn = common::connect_to_parent();
    let baseline = common::fd_table();
    let mut buf = [0; 64];
    let mut fds = Vec::new();
    let got = conn
        .recv_with_fds(&mut buf, &mut fds, MAX_FDS)
        .expect("recv 253");
    assert_eq!(got.fds, MAX_FDS);
    for fd in &fds {
        common::assert_cloexec("one of 253 received fds", fd);
    }
    conn.send(&(fds.len() as u32).to_le_bytes())
        .expect("answer count");
    drop(fds);
    assert_eq!(
        common::fd_table(),
        baseline,
        "fds still open after dropping the 253"
    );

    let mut fds = Vec::new();
    let err = conn
        .recv_with_fds(&mut buf, &mut fds, 3)
        .expect_err("budget of 3 must fail");
    match TransportError::of(&err) {
        Some(TransportError::FdsTruncated { limit: 3, received }) => {
            assert!(*received >= 3, "{err}")
        }
        other => panic!("expected FdsTruncated, got {other:?} ({err})"),
    }
    assert!(fds.is_empty(), "fds of a failed receive were handed out");
    assert_eq!(
        common::fd_table(),
        baseline,
        "surplus fds leaked after the truncated receive"
    );

    let n = conn.recv(&mut buf).expect("socket usable after the error");
    assert_eq!(&buf[..n], b"still here");
    conn.send(b"ok").expect("answer ok");
}

#[test]
fn a_pipe_write_end_is_used_by_another_process() {
    let _lock = common::fd_lock(); // the fd-table test below must not see our fds
    let (mut child, conn) = common::spawn_connected("pipe_writer");
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    conn.send_with_fds(b"write here", &[writer.as_fd()])
        .expect("send fd");
    drop(writer);

    let mut buf = [0; 16];
    let n = conn
        .recv_timeout(&mut buf, CHILD_TIMEOUT)
        .expect("child answered");
    assert_eq!(&buf[..n], b"done");
    child.wait_success();
    // Every write end is closed now (ours dropped, the child's exited).
    let mut text = String::new();
    reader.read_to_string(&mut text).expect("read pipe");
    assert_eq!(text, format!("hello from {}", child.pid()));
}

#[test]
fn max_fds_arrive_and_a_small_budget_closes_the_surplus() {
    let _lock = common::fd_lock(); // the fd-table test below must not see our fds
    let (mut child, conn) = common::spawn_connected("fd_counter");
    let file = std::fs::File::open("/dev/null").expect("open /dev/null");
    let many: Vec<BorrowedFd<'_>> = (0..MAX_FDS).map(|_| file.as_fd()).collect();

    conn.send_with_fds(b"253", &many).expect("send 253 fds");
    let mut buf = [0; 16];
    let n = conn.recv_timeout(&mut buf, CHILD_TIMEOUT).expect("count");
    assert_eq!(
        u32::from_le_bytes(buf[..n].try_into().unwrap()),
        MAX_FDS as u32
    );

    conn.send_with_fds(b"253 again", &many)
        .expect("send 253 fds again");
    conn.send(b"still here").expect("send plain");
    let n = conn.recv_timeout(&mut buf, CHILD_TIMEOUT).expect("ok");
    assert_eq!(&buf[..n], b"ok");
    child.wait_success();
}

#[test]
fn more_than_253_fds_are_refused_before_any_syscall() {
    let _lock = common::fd_lock(); // the fd-table test below must not see our fds
    let (a, b) = SeqPacketSocket::pair().unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let too_many: Vec<BorrowedFd<'_>> = (0..=MAX_FDS).map(|_| file.as_fd()).collect();
    let err = a.send_with_fds(b"x", &too_many).unwrap_err();
    assert!(
        matches!(
            TransportError::of(&err),
            Some(TransportError::TooManyFds { count: 254 })
        ),
        "{err}"
    );
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let mut buf = [0; 4];
    let nothing = b.try_recv(&mut buf).unwrap_err();
    assert_eq!(
        nothing.kind(),
        std::io::ErrorKind::WouldBlock,
        "something was sent"
    );
}

#[test]
fn a_passed_fd_shares_the_open_file_description() {
    let _lock = common::fd_lock(); // the fd-table test below must not see our fds
    let (a, b) = SeqPacketSocket::pair().unwrap();
    let dir = common::temp_dir();
    let mut file = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.path().join("f"))
        .unwrap();
    file.write_all(b"0123456789").unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    a.send_with_fds(b"f", &[file.as_fd()]).unwrap();
    let mut fds: Vec<OwnedFd> = Vec::new();
    b.recv_msg(
        &mut courier_transport::RecvMsg {
            bufs: &mut [std::io::IoSliceMut::new(&mut [0; 4])],
            fds: &mut fds,
            max_fds: 1,
        },
        Wait::timeout(Duration::from_secs(5)),
    )
    .unwrap();
    let mut copy = std::fs::File::from(fds.pop().unwrap());
    let mut four = [0; 4];
    copy.read_exact(&mut four).unwrap();
    assert_eq!(&four, b"0123");
    // The offset moved for the sender's fd too: same open file description.
    assert_eq!(file.stream_position().unwrap(), 4);
}

#[test]
fn unwanted_fds_in_process_are_closed() {
    let _lock = common::fd_lock();
    let baseline = common::fd_table();
    {
        let (a, b) = SeqPacketSocket::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let ten: Vec<BorrowedFd<'_>> = (0..10).map(|_| file.as_fd()).collect();
        a.send_with_fds(b"ten", &ten).unwrap();
        let mut fds = Vec::new();
        let err = b.recv_with_fds(&mut [0; 8], &mut fds, 2).unwrap_err();
        assert!(
            matches!(
                TransportError::of(&err),
                Some(TransportError::FdsTruncated { limit: 2, .. })
            ),
            "{err}"
        );
        assert!(fds.is_empty());
    }
    assert_eq!(common::fd_table(), baseline);
}
