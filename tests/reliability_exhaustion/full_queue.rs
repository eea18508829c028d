//! A full receive queue, over SEQPACKET, DGRAM and the pipe transport:
//! `try_send` fills it until `Full` (the value handed back), `send_timeout`
//! returns `Timeout` with the value back after its timeout, and a blocking
//! `send` waits until the receiver drains, its value arriving last.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use courier::{
    channel_over, Bytes, Config, Fd, Receiver, SendTimeoutError, Sender, Transport, TrySendError,
};
use serde::{Deserialize, Serialize};

use crate::bounded;
use crate::carrier::assert_devnull;
use crate::common::{self, CHILD_TIMEOUT};
use crate::support::fds::new_fds;
use crate::support::figures::{median_max, scaled, Figures};

/// A queued value: its place in the queue, 1 KiB of padding and maybe an fd.
#[derive(Serialize, Deserialize, Debug)]
struct Queued {
    seq: u64,
    pad: Bytes,
    fd: Option<Fd<File>>,
}

impl Queued {
    fn new(seq: u64, fd: Option<File>) -> Queued {
        Queued {
            seq,
            pad: Bytes::from(vec![(seq % 251) as u8; 1024]),
            fd: fd.map(Fd::new),
        }
    }
}

/// What one transport's full-queue cycle measured.
struct QueueRun {
    queued: u64,
    typed_errors: u64,
    timeout_took: Duration,
    woke_after: Duration,
}

/// How long `send_timeout` waits in the full-queue cases.
const SEND_TIMEOUT: Duration = Duration::from_millis(50);
/// How late it may return (a loaded 2-core machine).
const TIMEOUT_SLACK: Duration = Duration::from_secs(2);

/// Fills the queue of `tx` with `try_send` until `Full`, then checks
/// `try_send`, `send_timeout` and a blocking `send` (see the module docs).
fn full_queue_cycle(tx: &Sender<Queued>, rx: &Receiver<Queued>, fds: bool, what: &str) -> QueueRun {
    let mut typed_errors = 0;
    let fill_deadline = Instant::now() + Duration::from_secs(10);
    let mut queued = 0u64;
    loop {
        match tx.try_send(Queued::new(queued, None)) {
            Ok(()) => queued += 1,
            Err(TrySendError::Full(v)) => {
                assert_eq!(v.seq, queued, "{what}: Full handed back another value");
                typed_errors += 1;
                break;
            }
            Err(e) => panic!("{what}: filling the queue: {e:?}"),
        }
        assert!(
            Instant::now() < fill_deadline && queued < 1_000_000,
            "{what}: {queued} values queued and never Full"
        );
    }
    assert!(queued > 0, "{what}: not even one value fitted");

    // Full: the value comes back (with its fd, where fds travel).
    let file = fds.then(|| File::open("/dev/null").expect("open /dev/null"));
    let raw = file.as_ref().map(AsRawFd::as_raw_fd);
    let value = match tx.try_send(Queued::new(queued, file)) {
        Err(TrySendError::Full(v)) => v,
        other => panic!("{what}: expected Full, got {other:?}"),
    };
    typed_errors += 1;
    assert_eq!(value.seq, queued, "{what}: another value came back");
    assert_eq!(value.fd.as_ref().map(|f| f.as_raw_fd()), raw, "{what}: fd");
    if let Some(f) = &value.fd {
        assert_devnull(f.as_fd(), what);
    }

    // send_timeout: Timeout after the timeout, the value back.
    let started = Instant::now();
    let value = match tx.send_timeout(value, SEND_TIMEOUT) {
        Err(SendTimeoutError::Timeout(v)) => v,
        other => panic!("{what}: expected Timeout, got {other:?}"),
    };
    let timeout_took = started.elapsed();
    typed_errors += 1;
    assert!(
        timeout_took >= SEND_TIMEOUT && timeout_took < SEND_TIMEOUT + TIMEOUT_SLACK,
        "{what}: send_timeout({SEND_TIMEOUT:?}) returned after {timeout_took:?}"
    );
    assert_eq!(value.seq, queued, "{what}: another value came back");
    assert_eq!(value.fd.as_ref().map(|f| f.as_raw_fd()), raw, "{what}: fd");

    // A blocking send waits, and wakes once the receiver drains.
    let (woke_after, last) = std::thread::scope(|s| {
        let (done_tx, done) = mpsc::channel();
        let sender = s.spawn(move || {
            let r = tx.send(value);
            let _ = done_tx.send(Instant::now());
            r.map_err(|e| format!("{e:?}"))
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            matches!(done.try_recv(), Err(mpsc::TryRecvError::Empty)),
            "{what}: send into a full queue did not wait"
        );
        let drained = Instant::now();
        for seq in 0..queued {
            match rx.recv_timeout(CHILD_TIMEOUT) {
                Ok(v) => {
                    assert_eq!(v.seq, seq, "{what}: order");
                    assert!(v.fd.is_none() && v.pad.len() == 1024, "{what}: value {seq}");
                }
                Err(e) => panic!("{what}: queued value {seq}: {e:?}"),
            }
        }
        let woke = done
            .recv_timeout(CHILD_TIMEOUT)
            .unwrap_or_else(|_| panic!("{what}: the blocked send never woke"));
        sender
            .join()
            .expect("sender thread")
            .unwrap_or_else(|e| panic!("{what}: the blocked send failed: {e}"));
        let last = rx
            .recv_timeout(CHILD_TIMEOUT)
            .unwrap_or_else(|e| panic!("{what}: the blocked send's value: {e:?}"));
        (woke.saturating_duration_since(drained), last)
    });
    assert_eq!(last.seq, queued, "{what}: the blocked value is not last");
    assert_eq!(last.fd.is_some(), fds, "{what}: the blocked value's fd");
    if let Some(f) = &last.fd {
        assert_devnull(f.as_fd(), what);
    }
    match rx.try_recv() {
        Err(courier::TryRecvError::Empty) => {}
        other => panic!("{what}: expected an empty queue, got {other:?}"),
    }
    QueueRun {
        queued,
        typed_errors,
        timeout_took,
        woke_after,
    }
}

#[test]
fn a_full_queue_gives_full_timeout_and_a_send_that_waits_then_wakes() {
    let _lock = common::fd_lock();
    let rounds = scaled(3, 30);
    let mut figures = Figures::new("exhaustion");
    figures.add("part", "full_queue").add("rounds", rounds);
    let mut cases = 0;
    let mut typed = 0;
    for name in ["seqpacket", "datagram", "pipe"] {
        let baseline = common::fd_table();
        let run = bounded(name, Duration::from_secs(30 * rounds), move || {
            let (tx, rx) = match name {
                "seqpacket" => Config::new().channel::<Queued>(),
                "datagram" => Config::new().datagram(true).channel::<Queued>(),
                _ => channel_over::<Queued>(Transport::Pipe, Config::new()),
            }
            .expect("channel");
            let fds = name != "pipe";
            (0..rounds)
                .map(|round| full_queue_cycle(&tx, &rx, fds, &format!("{name} round {round}")))
                .collect::<Vec<_>>()
        });
        let leaked = new_fds(&baseline);
        assert!(leaked.is_empty(), "{name}: fds leaked: {leaked:?}");
        cases += 3 * rounds;
        typed += run.iter().map(|r| r.typed_errors).sum::<u64>();
        let queued: BTreeSet<u64> = run.iter().map(|r| r.queued).collect();
        let mut timeouts: Vec<Duration> = run.iter().map(|r| r.timeout_took).collect();
        let mut wakes: Vec<Duration> = run.iter().map(|r| r.woke_after).collect();
        let (_, timeout_max) = median_max(&mut timeouts);
        let (wake_median, wake_max) = median_max(&mut wakes);
        let queued = queued
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("/");
        figures
            .add(&format!("{name}_queued_until_full"), queued)
            .add(&format!("{name}_try_send"), "Full(value_back)")
            .add(&format!("{name}_send_timeout"), "Timeout(value_back)")
            .add_ms(&format!("{name}_send_timeout_50ms_took_max"), timeout_max)
            .add_ms(&format!("{name}_blocked_send_woke_median"), wake_median)
            .add_ms(&format!("{name}_blocked_send_woke_max"), wake_max);
    }
    figures
        .add("cases", cases)
        .add("typed_errors", typed)
        .add("leaks", 0)
        .add("hangs", 0);
    figures.report();
}
