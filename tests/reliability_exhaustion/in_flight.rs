//! Too many fds in flight: a child under `ulimit -n 64`, as root on a uid
//! of its own, sends a value holding 8 fds into a channel nobody reads
//! until the kernel refuses with `ETOOMANYREFS`; `send`, `try_send` and
//! `send_timeout` fail at once and hand the value back with the very same
//! fds, the raw transport says the same, nothing leaks, and sends work
//! again once the receiver drains.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use courier::transport::SeqPacketSocket;
use courier::{ChannelError, Config, SendError, SendTimeoutError, TrySendError};
use nix::errno::Errno;

use crate::bounded;
use crate::carrier::{assert_devnull, check_carrier, small, Carrier};
use crate::common::{self, CHILD_TIMEOUT};
use crate::support::child::run_for_result;
use crate::support::fds::new_fds;
use crate::support::figures::Figures;
use crate::support::limits::{become_user, lifts_in_flight_limit, nofile_limit, under_ulimit};
use crate::support::say;

/// The fds-in-flight child (see the module docs).
pub fn in_flight() {
    let private_uid = if nix::unistd::geteuid().is_root() {
        become_user(200_000 + std::process::id());
        true
    } else {
        false
    };
    if lifts_in_flight_limit() {
        say("result: skipped=keeps_CAP_SYS_RESOURCE_or_CAP_SYS_ADMIN");
        return;
    }
    let nofile = nofile_limit();
    assert_eq!(nofile, 64, "ulimit -n 64 did not take");
    const FDS: usize = 8;
    let baseline = common::fd_table();
    let (tx, rx) = Config::new().channel::<Carrier>().expect("channel");
    let value = small(0, FDS);
    let raw: Vec<i32> = value.files.iter().map(|f| f.as_raw_fd()).collect();

    // Copies of the value's fds go in flight until the kernel refuses.
    let mut sent = 0;
    let refused = loop {
        assert!(
            sent <= nofile,
            "{} fds in flight and no refusal",
            sent * FDS
        );
        match tx.send_ref(&value) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
    };
    let table = common::fd_table();
    let errno = |e: &ChannelError, what: &str| match e {
        ChannelError::Io(io) => {
            assert_eq!(
                io.raw_os_error(),
                Some(Errno::ETOOMANYREFS as i32),
                "{what}: {io}"
            );
        }
        other => panic!("{what}: expected Io(ETOOMANYREFS), got {other:?}"),
    };
    match &refused {
        SendError::Failed(v, e) => {
            errno(e, "send_ref");
            assert!(
                std::ptr::eq(*v, &value),
                "send_ref handed back another value"
            );
        }
        other => panic!("send_ref: expected Failed(.., Io(ETOOMANYREFS)), got {other:?}"),
    }
    drop(refused);
    if private_uid {
        // Refused as soon as more than RLIMIT_NOFILE are in flight.
        assert!(
            sent * FDS > nofile && (sent - 1) * FDS <= nofile,
            "refused with {} fds in flight, RLIMIT_NOFILE {nofile}",
            sent * FDS
        );
    }
    let handed_back = |v: &Carrier, what: &str| {
        let now: Vec<i32> = v.files.iter().map(|f| f.as_raw_fd()).collect();
        assert_eq!(now, raw, "{what}: other fds came back");
        for f in &v.files {
            assert_devnull(f.as_fd(), what);
        }
    };

    // By value: each form fails at once and hands the value back.
    let value = match tx.send(value) {
        Err(SendError::Failed(v, e)) => {
            errno(&e, "send");
            handed_back(&v, "send");
            v
        }
        other => panic!("send: expected Failed(.., Io(ETOOMANYREFS)), got {other:?}"),
    };
    let value = match tx.try_send(value) {
        Err(TrySendError::Failed(v, e)) => {
            errno(&e, "try_send");
            handed_back(&v, "try_send");
            v
        }
        other => panic!("try_send: expected Failed(.., Io(ETOOMANYREFS)), got {other:?}"),
    };
    let started = Instant::now();
    let value = match tx.send_timeout(value, Duration::from_secs(2)) {
        Err(SendTimeoutError::Failed(v, e)) => {
            errno(&e, "send_timeout");
            handed_back(&v, "send_timeout");
            v
        }
        other => panic!("send_timeout: expected Failed(.., Io(ETOOMANYREFS)), got {other:?}"),
    };
    let failed_in = started.elapsed();
    assert!(
        failed_in < Duration::from_secs(1),
        "send_timeout waited {failed_in:?} on an error that does not pass"
    );
    // The raw transport says the same.
    let (a, b) = SeqPacketSocket::pair().expect("socketpair");
    let fds: Vec<BorrowedFd<'_>> = value.files.iter().map(|f| f.as_fd()).collect();
    match a.send_with_fds(b"raw", &fds) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(Errno::ETOOMANYREFS as i32), "{e}"),
        Ok(n) => panic!("the raw send of {n} bytes with fds went through"),
    }
    drop((a, b));
    assert_eq!(common::fd_table(), table, "refused sends leaked fds");

    // The receiver drains: fds leave flight, and sends go again.
    for i in 0..sent {
        match rx.recv_timeout(CHILD_TIMEOUT) {
            Ok(got) => check_carrier(&got, 0, FDS, 0, &format!("queued value {i}")),
            Err(e) => panic!("queued value {i}: {e:?}"),
        }
    }
    tx.send(value).expect("send once the receiver drained");
    let got = rx.recv_timeout(CHILD_TIMEOUT).expect("the value sent last");
    check_carrier(&got, 0, FDS, 0, "the value sent last");
    drop(got);
    drop((tx, rx));
    let leaked = new_fds(&baseline);
    assert!(leaked.is_empty(), "fds leaked: {leaked:?}");
    say(&format!(
        "result: uid={} private_uid={private_uid} nofile={nofile} sends_before_refusal={sent} \
         in_flight_at_refusal={} errno=ETOOMANYREFS typed_errors=5 handed_back=3 \
         send_timeout_failed_in_ms={:.3} leaks={}",
        nix::unistd::geteuid(),
        sent * FDS,
        failed_in.as_secs_f64() * 1e3,
        leaked.len()
    ));
}

#[test]
fn a_sender_with_too_many_fds_in_flight_gets_etoomanyrefs_and_its_value_back() {
    let _lock = common::fd_lock();
    let cmd = under_ulimit(&common::role("in_flight"), 64);
    let result = bounded("in_flight", CHILD_TIMEOUT * 2, move || run_for_result(cmd));
    let mut figures = Figures::new("exhaustion");
    figures.add("part", "fds_in_flight");
    if let Some(why) = result.get("skipped") {
        println!(
            "skipped: the ETOOMANYREFS check cannot be forced: the child {why} \
             (run as root, or as a user without those capabilities)"
        );
        figures.add("skipped", why).report();
        return;
    }
    assert_eq!(result["leaks"], "0", "{result:?}");
    assert_eq!(result["errno"], "ETOOMANYREFS", "{result:?}");
    if common::is_root() {
        assert_eq!(result["private_uid"], "true", "{result:?}");
    } else {
        println!(
            "note: not root, so the child sends as this user, whose other processes' fds \
             in flight count too: the refusal point is not checked exactly"
        );
    }
    figures
        .add("cases", 4)
        .add("typed_errors", &result["typed_errors"])
        .add("leaks", 0)
        .add("hangs", 0);
    for key in [
        "uid",
        "nofile",
        "sends_before_refusal",
        "in_flight_at_refusal",
        "errno",
        "handed_back",
        "send_timeout_failed_in_ms",
    ] {
        figures.add(key, &result[key]);
    }
    figures.report();
}
