//! Reliability suite 6, resource exhaustion: every case ends in a typed
//! error or a documented wait, never in a leak or a hang.
//!
//! * **Receiver at its fd limit** (`receiver_at_its_fd_limit_...`): a child
//!   process, started under `ulimit -n 128`, queues values carrying fds
//!   (small ones, and large ones whose body travels in the sender's shared
//!   ring, a memfd sent along), then fills its fd table until exactly 3
//!   (later 0) slots are free and receives. The kernel installs what fits,
//!   closes the rest and sets `MSG_CTRUNC` (KERNEL-FACTS.md); the receive
//!   must fail with `RecvTimeoutError::Failed(ChannelError::Io(e))` where
//!   `TransportError::of(&e)` is `FdsTruncated { limit: 253, received }`,
//!   `received` being exactly the free slots, with the fd table back to what
//!   it was (the fds that did arrive closed). A value with fewer fds
//!   arrives at the same limit, and once slots are free again the values
//!   queued behind the refused ones arrive, in order, and a large value
//!   sent afterwards too (the ring is attached again). SEQPACKET and DGRAM.
//! * **Too many fds in flight** (`a_sender_with_too_many_fds_in_flight_...`):
//!   the kernel refuses a send with `ETOOMANYREFS` once the sending user has
//!   more fds in flight than its `RLIMIT_NOFILE`, unless it has
//!   `CAP_SYS_RESOURCE` or `CAP_SYS_ADMIN`. So a child under `ulimit -n 64`
//!   that, when run as root, drops to a uid of its own (200000 + its pid:
//!   the kernel counts fds in flight per user, and a uid shared with other
//!   processes, such as 65534, would make the count theirs too; the change
//!   of uid clears the capabilities) sends a value holding 8 fds into a
//!   channel nobody reads until the kernel refuses: `send`, `try_send` and
//!   `send_timeout` must fail at once with `Failed(value, ChannelError::Io)`
//!   of errno `ETOOMANYREFS` and hand the value back with the very same
//!   fds, still open; the raw transport reports the same errno; nothing
//!   leaks; once the receiver drains, sends work again. A child that keeps
//!   those capabilities says `skipped` (printed by the test).
//! * **Full receive queue** (`a_full_queue_...`): over SEQPACKET, DGRAM
//!   (`Config::datagram(true)`) and the pipe transport
//!   (`channel_over(Transport::Pipe, ..)`): `try_send` fills the queue
//!   until `Full`, which hands the value back (with its fd, on sockets);
//!   `send_timeout` returns `Timeout` with the value back after its timeout
//!   and within a bound; a blocking `send` waits (still waiting after
//!   100 ms) and wakes once the receiver drains, its value arriving last,
//!   after every queued one, in order.
//!
//! Each test holds `common::fd_lock()` for its whole run (they spawn
//! processes and compare fd tables) and runs its cases under a watchdog, so
//! a hang fails the test instead of stalling CI. Each prints one
//! `figures: suite=exhaustion part=...` line (`--nocapture` to see it):
//! cases, typed errors, leaks (0), hangs (0) and the outcome of each case.
//! There is no randomness here; the long version (`COURIER_SOAK=1`) repeats
//! the full-queue cycle more times.

#[path = "../crates/transport/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Guard, CHILD_TIMEOUT, ROLE_ENV};
use courier::transport::{SeqPacketSocket, TransportError};
use courier::{
    channel_over, Bytes, ChannelError, Config, Fd, Receiver, RecvTimeoutError, SendError,
    SendTimeoutError, Sender, Transport, TrySendError,
};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};
use support::figures::{median_max, scaled, Figures};
use support::{collect_lines, lines_of, panic_text, say};

// ---- what travels -----------------------------------------------------

/// A value carrying `files` (each `/dev/null`), and `pad` bytes: 256 KiB
/// make it a large value, which travels through the sender's shared ring.
#[derive(Serialize, Deserialize, Debug)]
struct Carrier {
    tag: u64,
    files: Vec<Fd<File>>,
    pad: Bytes,
}

/// Bytes of padding that make a [`Carrier`] large (above the 64 KiB inline
/// threshold).
const LARGE_PAD: usize = 256 << 10;

/// `n` fresh fds on `/dev/null`.
fn devnulls(n: usize) -> Vec<Fd<File>> {
    (0..n)
        .map(|_| Fd::new(File::open("/dev/null").expect("open /dev/null")))
        .collect()
}

/// A small carrier of `n` fds.
fn small(tag: u64, n: usize) -> Carrier {
    Carrier {
        tag,
        files: devnulls(n),
        pad: Bytes::from(Vec::new()),
    }
}

/// A large carrier of `n` fds, its padding a function of `tag`.
fn large(tag: u64, n: usize) -> Carrier {
    Carrier {
        tag,
        files: devnulls(n),
        pad: Bytes::from(vec![tag as u8; LARGE_PAD]),
    }
}

/// Asserts that `fd` is open on `/dev/null`.
fn assert_devnull(fd: BorrowedFd<'_>, what: &str) {
    let null = nix::sys::stat::stat("/dev/null").expect("stat /dev/null");
    let st = nix::sys::stat::fstat(fd)
        .unwrap_or_else(|e| panic!("{what}: fd {} is not open: {e}", fd.as_raw_fd()));
    assert_eq!(
        (st.st_dev, st.st_ino, st.st_rdev),
        (null.st_dev, null.st_ino, null.st_rdev),
        "{what}: fd {} is not /dev/null",
        fd.as_raw_fd()
    );
}

/// Checks a received carrier: its tag, fd count (each `/dev/null`) and
/// padding.
fn check_carrier(got: &Carrier, tag: u64, fds: usize, pad: usize, what: &str) {
    assert_eq!(got.tag, tag, "{what}: another value arrived (order lost?)");
    assert_eq!(got.files.len(), fds, "{what}: fds");
    for f in &got.files {
        assert_devnull(f.as_fd(), what);
    }
    assert_eq!(got.pad.len(), pad, "{what}: padding length");
    assert!(got.pad.iter().all(|&b| b == tag as u8), "{what}: padding");
}

// ---- roles --------------------------------------------------------------

/// Which channel the `fd_limit` role uses: `seqpacket` or `datagram`.
const KIND_ENV: &str = "COURIER_TEST_KIND";

const ROLES: &[(&str, fn())] = &[("fd_limit", fd_limit), ("in_flight", in_flight)];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

/// This test binary in role `name`, started by `sh` under `ulimit -n
/// nofile`, its stdout piped (the role reports on a `result:` line).
fn limited_role(name: &str, nofile: u64) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -n \"$1\" && shift && exec \"$@\"",
        "sh",
        &nofile.to_string(),
    ])
    .arg(std::env::current_exe().expect("current_exe"))
    .args([
        "role_entry",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(ROLE_ENV, name)
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    cmd
}

/// Runs `cmd` to its end (bounded) and returns the `key=value` pairs of
/// its `result:` line.
fn run_for_result(cmd: Command) -> BTreeMap<String, String> {
    let mut child = Guard::spawn(cmd);
    let lines = lines_of(child.0.stdout.take().expect("piped stdout"));
    let out = collect_lines(&lines, CHILD_TIMEOUT);
    child.wait_success();
    let line = out
        .iter()
        .find_map(|l| l.strip_prefix("result:"))
        .unwrap_or_else(|| panic!("no result line from the child; it said {out:?}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
fn nofile_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .expect("read /proc/self/limits")
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("Max open files line")
        .parse()
        .expect("a number")
}

/// Whether this process has `CAP_SYS_ADMIN` or `CAP_SYS_RESOURCE` in
/// effect (either lifts the limit on fds in flight).
fn lifts_in_flight_limit() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("read status");
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff line");
    let cap_eff = u64::from_str_radix(cap_eff.trim(), 16).expect("hex CapEff");
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_SYS_RESOURCE: u64 = 24;
    cap_eff & (1 << CAP_SYS_ADMIN | 1 << CAP_SYS_RESOURCE) != 0
}

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
fn fd_limit() {
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
    let after = common::fd_table();
    let leaked: Vec<_> = after
        .iter()
        .filter(|(fd, _)| !baseline.contains_key(fd))
        .collect();
    assert!(leaked.is_empty(), "fds leaked: {leaked:?}");
    say(&format!(
        "result: typed_errors=4 leaks={} outcomes={}",
        leaked.len(),
        outcomes.join(",")
    ));
}

/// The fds-in-flight child (see the module docs).
fn in_flight() {
    let private_uid = if nix::unistd::geteuid().is_root() {
        use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
        let id = 200_000 + std::process::id();
        setgroups(&[]).expect("setgroups");
        setgid(Gid::from_raw(id)).expect("setgid");
        setuid(Uid::from_raw(id)).expect("setuid");
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
    let after = common::fd_table();
    let leaked: Vec<_> = after
        .iter()
        .filter(|(fd, _)| !baseline.contains_key(fd))
        .collect();
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

// ---- the watchdog -------------------------------------------------------

/// Runs `f` in a thread and waits at most `limit` for it: a case that
/// hangs fails the test (naming it) instead of stalling the run. A panic
/// in `f` is passed on.
fn bounded<R: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (done, result) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = done.send(r);
        })
        .expect("spawn a case thread");
    match result.recv_timeout(limit) {
        Ok(Ok(r)) => {
            worker.join().expect("case thread");
            r
        }
        Ok(Err(panic)) => panic!("{what}: {}", panic_text(&*panic)),
        Err(_) => panic!("hang: {what} did not finish within {limit:?}"),
    }
}

// ---- 1. the receiver at its fd limit --------------------------------------

#[test]
fn receiver_at_its_fd_limit_gets_a_typed_error_closes_what_arrived_and_goes_on() {
    let _lock = common::fd_lock();
    let mut figures = Figures::new("exhaustion");
    figures.add("part", "receiver_fd_limit");
    let mut cases = 0;
    let mut typed = 0;
    let mut results = Vec::new();
    for kind in ["seqpacket", "datagram"] {
        let mut cmd = limited_role("fd_limit", 128);
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

// ---- 2. too many fds in flight ---------------------------------------------

#[test]
fn a_sender_with_too_many_fds_in_flight_gets_etoomanyrefs_and_its_value_back() {
    let _lock = common::fd_lock();
    let cmd = limited_role("in_flight", 64);
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

// ---- 3. a full receive queue ----------------------------------------------

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
        let leaked: BTreeSet<_> = common::fd_table()
            .into_iter()
            .filter(|(fd, _)| !baseline.contains_key(fd))
            .collect();
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
