//! The receiver at its fd limit: a child under `ulimit -n 128` queues
//! values carrying fds, fills its fd table until exactly 3 (later 0) slots
//! are free and receives: `FdsTruncated` with exactly the free slots'
//! worth installed and closed again, a value with fewer fds arriving at
//! the same limit, and everything queued behind arriving in order once
//! slots are free again. SEQPACKET and DGRAM.

use std::fs::File;

use courier::transport::TransportError;
use courier::{ChannelError, Config, Receiver, RecvTimeoutError};

use crate::carrier::{check_carrier, large, small, Carrier, LARGE_PAD};
use crate::common::{self, CHILD_TIMEOUT};
use crate::support::child::run_for_result;
use crate::support::fds::new_fds;
use crate::support::figures::Figures;
use crate::support::limits::{nofile_limit, under_ulimit};
use crate::support::say;
use crate::{bounded, KIND_ENV};

/// `/dev/null` opened until the fd table is full, then the last `free`
/// closed again: exactly `free` slots stay free below `RLIMIT_NOFILE`
/// (the kernel gives out the lowest free number, so the ones closed are the
/// only free ones).
struct Filler(Vec<File>);

impl Filler {
    fn leaving(free: usize) -> Filler {
        let mut filler = Filler(Vec::new());
        filler.set_free(free);
        filler
    }

    /// Opens until `EMFILE`, then closes `free`.
    fn set_free(&mut self, free: usize) {
        let most = nofile_limit();
        loop {
            match File::open("/dev/null") {
                Ok(f) => self.0.push(f),
                Err(e) if e.raw_os_error() == Some(nix::libc::EMFILE) => break,
                Err(e) => panic!("open /dev/null: {e}"),
            }
            assert!(self.0.len() <= most, "EMFILE never came");
        }
        for _ in 0..free {
            self.0.pop().expect("a filler fd to close");
        }
    }
}

/// Receives the next value and expects the fd truncation the kernel
/// reports at the fd limit, with `received` fds installed (and closed).
fn expect_fds_truncated(rx: &Receiver<Carrier>, received: usize, what: &str) -> String {
    match rx.recv_timeout(CHILD_TIMEOUT) {
        Err(RecvTimeoutError::Failed(ChannelError::Io(e))) => match TransportError::of(&e) {
            Some(&TransportError::FdsTruncated {
                limit,
                received: got,
            }) => {
                assert_eq!(limit, courier::transport::MAX_FDS, "{what}: the limit");
                assert_eq!(got, received, "{what}: fds installed before EMFILE");
                format!("FdsTruncated({got})")
            }
            _ => panic!("{what}: expected FdsTruncated, got Io({e:?})"),
        },
        Ok(v) => panic!("{what}: the value arrived at the fd limit: {v:?}"),
        Err(e) => panic!("{what}: expected Failed(Io(FdsTruncated)), got {e:?}"),
    }
}

/// Receives the next value and checks it.
fn expect_carrier(rx: &Receiver<Carrier>, tag: u64, fds: usize, pad: usize, what: &str) {
    match rx.recv_timeout(CHILD_TIMEOUT) {
        Ok(got) => check_carrier(&got, tag, fds, pad, what),
        Err(e) => panic!("{what}: value {tag} did not arrive: {e:?}"),
    }
}

/// The fd-limit child (see the module docs).
pub fn fd_limit() {
    let datagram = std::env::var(KIND_ENV).expect("kind") == "datagram";
    let baseline = common::fd_table();
    let (tx, rx) = Config::new()
        .datagram(datagram)
        .channel::<Carrier>()
        .expect("channel");
    // Everything is queued while fds are plentiful (a send needs fds of its
    // own); receiving comes with the fd table full.
    let queued = [
        small(1, 8),
        small(2, 8),
        small(3, 2),
        large(4, 0),
        large(5, 8),
        small(6, 8),
        large(7, 3),
    ];
    for v in queued {
        tx.send(v).expect("queue a value");
    }
    let mut outcomes = Vec::new();

    let mut filler = Filler::leaving(3);
    let before = common::fd_table();
    outcomes.push(expect_fds_truncated(&rx, 3, "8 fds, 3 slots free"));
    assert_eq!(
        common::fd_table(),
        before,
        "fds leaked by a truncated receive"
    );
    outcomes.push(expect_fds_truncated(&rx, 3, "8 fds again, 3 slots free"));
    assert_eq!(
        common::fd_table(),
        before,
        "fds leaked by a truncated receive"
    );
    // Fewer fds than free slots: arrives at the same limit.
    expect_carrier(&rx, 3, 2, 0, "2 fds with 3 slots free");
    assert_eq!(
        common::fd_table(),
        before,
        "the received value's fds stayed open"
    );
    outcomes.push("2fds_ok".into());

    // No slot free: a large value's ring memfd alone cannot be installed.
    filler.set_free(0);
    outcomes.push(expect_fds_truncated(&rx, 0, "a large value, no slot free"));
    outcomes.push(expect_fds_truncated(
        &rx,
        0,
        "a large value with 8 fds, no slot free",
    ));
    drop(filler);

    // Room again: what was queued behind the refused values arrives, in
    // order, and a large value sent now too (its ring attached again).
    expect_carrier(&rx, 6, 8, 0, "8 fds after the limit was lifted");
    expect_carrier(
        &rx,
        7,
        3,
        LARGE_PAD,
        "a large value after the limit was lifted",
    );
    tx.send(large(8, 5)).expect("send after");
    expect_carrier(
        &rx,
        8,
        5,
        LARGE_PAD,
        "a large value sent after the refusals",
    );
    tx.send(small(9, 8)).expect("send after");
    expect_carrier(&rx, 9, 8, 0, "8 fds sent after the refusals");
    outcomes.push("usable_after".into());

    drop((tx, rx));
    let leaked = new_fds(&baseline);
    assert!(leaked.is_empty(), "fds leaked: {leaked:?}");
    say(&format!(
        "result: typed_errors=4 leaks={} outcomes={}",
        leaked.len(),
        outcomes.join(",")
    ));
}

#[test]
fn receiver_at_its_fd_limit_gets_a_typed_error_closes_what_arrived_and_goes_on() {
    let _lock = common::fd_lock();
    let mut figures = Figures::new("exhaustion");
    figures.add("part", "receiver_fd_limit");
    let mut cases = 0;
    let mut typed = 0;
    let mut results = Vec::new();
    for kind in ["seqpacket", "datagram"] {
        let mut cmd = under_ulimit(&common::role("fd_limit"), 128);
        cmd.env(KIND_ENV, kind);
        let result = bounded(kind, CHILD_TIMEOUT * 2, move || run_for_result(cmd));
        assert_eq!(result["leaks"], "0", "{kind}: {result:?}");
        cases += 1;
        typed += result["typed_errors"].parse::<u64>().expect("count");
        results.push((kind, result["outcomes"].clone()));
    }
    figures
        .add("cases", cases)
        .add("typed_errors", typed)
        .add("leaks", 0)
        .add("hangs", 0);
    for (kind, outcomes) in results {
        figures.add(kind, outcomes);
    }
    figures.report();
}
