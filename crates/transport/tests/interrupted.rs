//! A blocking frame send or receive interrupted by a signal (a handler
//! installed without `SA_RESTART`, so the kernel returns `EINTR`) goes back
//! to waiting and completes: the caller never sees `Interrupted`, and no
//! frame is lost or doubled.
//!
//! Each test waits until its thread is inside the syscall (read from
//! `/proc/self/task/<tid>/syscall`) before signalling it, so the signal
//! really interrupts the call.

#![allow(unsafe_code)]

use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use courier_transport::{FrameTransport, SeqPacketSocket, Wait};
use nix::libc;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Every bounded wait of this file.
const WAIT: Duration = Duration::from_secs(10);

static HANDLED: AtomicUsize = AtomicUsize::new(0);

/// Held by each test for its whole run: `HANDLED` counts for the whole
/// process, so two tests signalling at once could each take the other's
/// handler run for their own.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

extern "C" fn count(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::SeqCst);
}

/// Installs `count` for SIGUSR1 without `SA_RESTART`.
fn install_handler() {
    let action = SigAction::new(
        SigHandler::Handler(count),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: `count` only touches an atomic, which is async-signal-safe;
    // SIGUSR1 is used by nothing else in this test binary.
    unsafe { sigaction(Signal::SIGUSR1, &action) }.expect("sigaction");
}

/// A thread of this process, as the kernel and pthreads name it.
#[derive(Clone, Copy)]
struct Thread {
    tid: libc::pid_t,
    handle: libc::pthread_t,
}

impl Thread {
    fn current() -> Thread {
        Thread {
            // SAFETY: gettid(2) cannot fail and has no preconditions.
            tid: unsafe { libc::gettid() },
            // SAFETY: pthread_self(3) cannot fail and has no preconditions.
            handle: unsafe { libc::pthread_self() },
        }
    }

    /// The number of the syscall the thread is blocked in, if any.
    fn syscall(self) -> Option<i64> {
        let path = format!("/proc/self/task/{}/syscall", self.tid);
        let text = std::fs::read_to_string(path).ok()?;
        text.split_whitespace().next()?.parse().ok()
    }

    /// Waits (bounded) until the thread is blocked in syscall `nr`.
    fn wait_in_syscall(self, nr: i64) {
        let start = Instant::now();
        while self.syscall() != Some(nr) {
            assert!(
                start.elapsed() < WAIT,
                "thread never blocked in syscall {nr}"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn signal(self) {
        // SAFETY: the thread is alive (it is blocked in a syscall, and only
        // ends after this test's final send) and SIGUSR1 has a handler.
        let rc = unsafe { libc::pthread_kill(self.handle, libc::SIGUSR1) };
        assert_eq!(rc, 0, "pthread_kill");
    }

    /// Interrupts the thread's blocking syscall `nr` twice, checking each
    /// time that the handler ran and that the thread went back to waiting
    /// in the same syscall.
    fn interrupt_twice(self, nr: i64) {
        for _ in 0..2 {
            self.wait_in_syscall(nr);
            let before = HANDLED.load(Ordering::SeqCst);
            self.signal();
            let start = Instant::now();
            while HANDLED.load(Ordering::SeqCst) == before {
                assert!(start.elapsed() < WAIT, "the handler never ran");
                thread::sleep(Duration::from_millis(1));
            }
        }
        self.wait_in_syscall(nr);
    }
}

#[test]
fn an_interrupted_blocking_receive_waits_on_and_gets_the_frame() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    install_handler();
    let (a, b) = SeqPacketSocket::pair().expect("pair");
    let (tx, rx) = mpsc::channel();
    let receiver = thread::spawn(move || {
        tx.send(Thread::current()).expect("tid");
        let mut buf = Vec::new();
        let mut fds = Vec::new();
        let got = b.recv_frame(&mut buf, 64, &mut fds, 0, Wait::Block);
        (got.map(|len| len.map(|len| buf[..len].to_vec())), b)
    });
    let thread = rx.recv_timeout(WAIT).expect("receiver started");
    thread.interrupt_twice(libc::SYS_recvmsg);
    a.send_frame(&[IoSlice::new(b"after")], &[], Wait::Block)
        .expect("send");
    let (got, b) = receiver.join().expect("receiver");
    assert_eq!(got.expect("not interrupted"), Some(b"after".to_vec()));
    // Exactly one frame: nothing doubled, nothing left.
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    let next = b.recv_frame(&mut buf, 64, &mut fds, 0, Wait::Never);
    assert_eq!(
        next.expect_err("queue empty").kind(),
        std::io::ErrorKind::WouldBlock
    );
}

#[test]
fn an_interrupted_blocking_send_waits_on_and_sends_the_frame() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    install_handler();
    let (a, b) = SeqPacketSocket::pair().expect("pair");
    // Fill the queue until a send would block.
    let mut queued = 0usize;
    while a.try_send(&[7u8; 512]).is_ok() {
        queued += 1;
        assert!(queued < 1_000_000, "the queue never filled");
    }
    let (tx, rx) = mpsc::channel();
    let sender = thread::spawn(move || {
        tx.send(Thread::current()).expect("tid");
        let sent = a.send_frame(&[IoSlice::new(b"last")], &[], Wait::Block);
        (sent, a)
    });
    let thread = rx.recv_timeout(WAIT).expect("sender started");
    thread.interrupt_twice(libc::SYS_sendto);
    // Make room (the kernel wakes a blocked sender only once most of the
    // queue has drained): every queued frame, then the last one, once.
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    for _ in 0..queued {
        let got = b.recv_frame(&mut buf, 1024, &mut fds, 0, Wait::Block);
        assert_eq!(got.expect("recv"), Some(512));
    }
    let (sent, a) = sender.join().expect("sender");
    sent.expect("not interrupted");
    let got = b.recv_frame(&mut buf, 1024, &mut fds, 0, Wait::Block);
    assert_eq!(got.expect("recv"), Some(4));
    assert_eq!(&buf[..4], b"last");
    drop(a);
    assert_eq!(
        b.recv_frame(&mut buf, 1024, &mut fds, 0, Wait::Block)
            .expect("eof"),
        None
    );
}
