//! Reliability suite 1: a hostile peer.
//!
//! Two parts, each with the courier side in a child process of its own (so
//! that its fd table and its peak memory are its own) and the hostile side
//! in another: this test binary re-executed in a role (see `common::role`).
//!
//! * **Receiver** (`hostile_frames_to_a_typed_receiver`): a process speaking
//!   the raw transport sends at least 10,000 adversarial frames (short run)
//!   to a typed [`Receiver`] configured with a 1 MiB limit: random bytes,
//!   well-formed bodies with wrong fd indices and depth bombs, lying
//!   lengths, terabyte size claims (header and body), fd counts that
//!   disagree with the header, up to 253 fds of the wrong kinds (pipes,
//!   sockets, /dev/null, a directory, eventfd, timerfd, signalfd, pidfd,
//!   memfd, a regular file), shared-memory bodies (kind 1) and rings
//!   (kind 2) in memfds without seals, of the wrong size or shrunk after
//!   sending, rings rewritten or hole-punched after sending, and empty
//!   frames. Every 25th frame is a valid value from a real courier
//!   [`Sender`] on the same socket (small, with an fd, through the ring, in
//!   a memfd), which must arrive intact. The two sides run in lock step
//!   over a second connection: the hostile side sends a batch, then does
//!   its after-send mischief (`ftruncate`, rewrites), then tells the
//!   receiver how many frames to read and what each was meant to test;
//!   the receiver reads exactly that many (each `recv_timeout` inside
//!   `catch_unwind`) and counts frames, values, typed errors by kind,
//!   expectation violations, panics and timeouts, then checks that its fd
//!   table is back at its baseline and reads its peak RSS (`VmHWM`).
//! * **Listener** (`hostile_connections_to_a_listener`): a hostile process
//!   opens connections to a courier [`Listener`] (handshake timeout
//!   200 ms) that stall (also in a burst), close at once, or lie in their
//!   hello (bad magic, wrong wire version, truncated, over-long, reserved
//!   bits, a name that is not UTF-8, another protocol, fds attached, random
//!   bytes), and some that complete the handshake and then send hostile
//!   frames. Each must end in the expected typed [`ConnectError`] (matched
//!   connection by connection: the listener handles them in order), be
//!   closed by the listener in bounded time, leak no fd and cost bounded
//!   memory; afterwards a valid client (this test process) connects and
//!   exchanges a value.
//! * `frames_queued_behind_an_empty_frame_outlive_the_peer`: the defect the
//!   listener part found (an empty frame from a peer that then left was
//!   taken for the end of stream, losing the frames queued behind it).
//!
//! Seeds are deterministic and printed; `COURIER_HOSTILE_SEED` (decimal or
//! `0x` hex) overrides. `COURIER_SOAK=1` runs ten times the frames and
//! connections:
//!
//! ```text
//! COURIER_SOAK=1 cargo test --release --test reliability_hostile -- --nocapture
//! ```
//!
//! Layout: the tests are here; [`settings`] holds the numbers, [`messages`]
//! and [`categories`] what travels and what each frame should produce,
//! [`frames`] and [`pool`] the hostile frames and their fds, [`sender`],
//! [`receiver`] and [`tally`] the receiver part's two sides, [`connector`]
//! and [`listener`] the listener part's. Raw frame builders, memfds, seeds
//! and child plumbing are shared with the other suites in `tests/support`.

#[path = "../../crates/transport/tests/common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

mod categories;
mod connector;
mod frames;
mod listener;
mod messages;
mod pool;
mod receiver;
mod sender;
mod settings;
mod tally;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Guard, ADDR_ENV, CHILD_TIMEOUT};
use courier::transport::SeqPacketSocket;
use courier::{ChannelError, Config, Endpoint, Receiver, RecvTimeoutError};

use categories::CATS;
use connector::{allowed, CONN_KINDS};
use listener::server_config;
use messages::{number_body, Ask, Reply, Wire};
use settings::{
    listener_rss_bound_kib, receiver_rss_bound_kib, seed, CONNECTIONS_ENV, FINISH, FRAMES_ENV,
    FRAME_WAIT, HANDSHAKE_TIMEOUT, LIMIT, SEED_ENV,
};
use support::child::{finish, random_address, spawn_piped, Lines};
use support::figures::{self, Figures};
use support::report::{line_with, num, pairs};
use support::wait_line;
use support::wire::{inline_frame, send_frame};

// ---- roles --------------------------------------------------------------

const RECEIVER: &str = "hostile-receiver";
const SENDER: &str = "hostile-sender";
const SERVER: &str = "hostile-listener";
const CONNECTOR: &str = "hostile-connector";

const ROLES: &[(&str, fn())] = &[
    (RECEIVER, receiver::role_receiver),
    (SENDER, sender::role_sender),
    (SERVER, listener::role_server),
    (CONNECTOR, connector::role_connector),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

/// Starts role `name` on the abstract address `hex`, its stdout piped.
fn start(name: &str, hex: &str, extra: &[(&str, String)]) -> (Guard, Lines) {
    let mut cmd = common::role(name);
    cmd.env(ADDR_ENV, hex)
        .env(SEED_ENV, format!("{:#x}", seed()));
    for (k, v) in extra {
        cmd.env(k, v);
    }
    spawn_piped(cmd)
}

// ---- the tests -------------------------------------------------------------------

#[test]
fn hostile_frames_to_a_typed_receiver() {
    let seed = seed();
    let frames = figures::scaled(10_000, 100_000);
    let limit = Duration::from_secs(figures::scaled(240, 2400));
    println!(
        "hostile-receiver: seed {seed:#x} (set {SEED_ENV} to change), {frames} hostile frames"
    );
    let started = Instant::now();
    let (_, hex) = random_address();
    let (mut receiver, rlines) = start(RECEIVER, &hex, &[]);
    wait_line(&rlines, "ready", CHILD_TIMEOUT).expect("the receiver did not start");
    let (mut sender, slines) = start(SENDER, &hex, &[(FRAMES_ENV, frames.to_string())]);
    let sent_out = finish(&mut sender, &slines, "the hostile sender", limit);
    let recv_out = finish(&mut receiver, &rlines, "the receiver", limit);
    let elapsed = started.elapsed();

    let sent = pairs(line_with(&sent_out, "sent:").expect("the sender's report"));
    let result = pairs(line_with(&recv_out, "result:").expect("the receiver's report"));
    let details: Vec<&String> = recv_out
        .iter()
        .filter(|l| {
            ["violation:", "leak:", "cat:", "errors:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    for l in &details {
        println!("  {l}");
    }
    let report = || {
        details
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };

    let probes = num(&sent, "probe");
    let hostile = num(&sent, "frames");
    assert!(hostile >= frames, "only {hostile} hostile frames sent");
    assert_eq!(
        num(&result, "frames"),
        hostile + probes,
        "frames read != frames sent"
    );
    for (_, cat, _) in CATS {
        let line = recv_out
            .iter()
            .find_map(|l| l.strip_prefix(&format!("cat: {cat} ")))
            .map(pairs)
            .unwrap_or_default();
        let read = line.get("frames").map_or(0, |v| v.parse().unwrap_or(0));
        assert_eq!(read, num(&sent, cat), "{cat}: frames read != sent");
        if cat != "probe" {
            assert!(read > 0, "category {cat} never ran (seed {seed:#x})");
        }
    }
    assert_eq!(
        num(&result, "panics"),
        0,
        "receives panicked:\n{}",
        report()
    );
    assert_eq!(
        num(&result, "timeouts"),
        0,
        "frames gave no outcome:\n{}",
        report()
    );
    assert_eq!(
        num(&result, "violations"),
        0,
        "outcomes that break the expectations (seed {seed:#x}):\n{}",
        report()
    );
    assert_eq!(
        num(&result, "probes_ok"),
        probes,
        "valid values lost or damaged"
    );
    assert_eq!(
        num(&result, "disconnected"),
        1,
        "no Disconnected after the sender left"
    );
    assert_eq!(num(&result, "fds_leaked"), 0, "fds leaked:\n{}", report());
    assert_eq!(
        num(&result, "fds_closed"),
        0,
        "fds of the receiver's own were closed"
    );
    assert_eq!(
        num(&result, "stray_fds_held"),
        0,
        "non-ring fds held by the live receiver"
    );
    assert!(
        num(&result, "ring_fds_held") <= 9,
        "more rings held than a receiver keeps"
    );
    let base = num(&result, "base_rss_kib");
    let peak = num(&result, "peak_rss_kib");
    let bound = receiver_rss_bound_kib();
    assert!(
        peak <= base + bound,
        "receiver peak RSS {peak} KiB > baseline {base} KiB + bound {bound} KiB"
    );
    let typed = num(&result, "typed_errors");
    assert!(
        typed > 0 && num(&result, "values") > 0,
        "no errors or no values at all"
    );

    let mut fig = Figures::new("hostile-receiver");
    fig.add("seed", format!("{seed:#x}"))
        .add("frames", hostile)
        .add("probes", probes)
        .add("probes_intact", num(&result, "probes_ok"))
        .add("typed_errors", typed)
        .add("error_kinds", num(&result, "error_kinds"))
        .add("values", num(&result, "values"))
        .add("panics", num(&result, "panics"))
        .add("timeouts", num(&result, "timeouts"))
        .add("violations", num(&result, "violations"))
        .add("fds_sent", num(&sent, "fds"))
        .add("fds_leaked", num(&result, "fds_leaked"))
        .add("base_rss_kib", base)
        .add("peak_rss_kib", peak)
        .add("rss_growth_kib", peak.saturating_sub(base))
        .add("rss_bound_kib", bound)
        .add("limit_kib", LIMIT / 1024);
    for (_, cat, _) in CATS.iter().skip(1) {
        fig.add(cat, num(&sent, cat));
    }
    for note in ["shm_shrink_blocked", "ring_shrink_blocked"] {
        fig.add(note, sent.get(note).map_or("0", String::as_str));
    }
    fig.add_ms("time", elapsed).report();
}

#[test]
fn hostile_connections_to_a_listener() {
    let seed = seed();
    let connections = figures::scaled(2_000, 20_000);
    let limit = Duration::from_secs(figures::scaled(240, 2400));
    println!(
        "hostile-listener: seed {seed:#x} (set {SEED_ENV} to change), {connections} hostile connections"
    );
    let started = Instant::now();
    let (addr, hex) = random_address();
    let (mut server, server_lines) = start(SERVER, &hex, &[]);
    wait_line(&server_lines, "ready", CHILD_TIMEOUT).expect("the listener did not start");
    let (mut connector, connector_lines) = start(
        CONNECTOR,
        &hex,
        &[(CONNECTIONS_ENV, connections.to_string())],
    );
    let connector_out = finish(
        &mut connector,
        &connector_lines,
        "the hostile connector",
        limit,
    );

    // After all of that, a valid client connects and exchanges a value.
    let client_config = server_config().handshake_timeout(CHILD_TIMEOUT);
    let client = Endpoint::<Ask, Reply>::connect(&addr, client_config)
        .unwrap_or_else(|e| panic!("a valid client could not connect after the attack: {e:?}"));
    client.send(Ask::Ping(41)).expect("send a ping");
    let reply = client
        .recv_timeout(CHILD_TIMEOUT)
        .expect("the listener's reply");
    assert_eq!(reply, Reply::Pong(42), "the exchange after the attack");
    client.send(Ask::Finish(FINISH)).expect("send finish");
    let server_out = finish(&mut server, &server_lines, "the listener", limit);
    drop(client);
    let elapsed = started.elapsed();

    let plan = line_with(&connector_out, "plan:").expect("the connector's plan");
    let conn = pairs(line_with(&connector_out, "connector:").expect("the connector's report"));
    let outcomes = line_with(&server_out, "outcomes:").expect("the listener's outcomes");
    let result = pairs(line_with(&server_out, "result:").expect("the listener's report"));
    let problems: Vec<&String> = server_out
        .iter()
        .chain(&connector_out)
        .filter(|l| l.starts_with("violation:") || l.starts_with("leak:"))
        .collect();
    for l in server_out
        .iter()
        .filter(|l| l.starts_with("errors:"))
        .chain(problems.iter().copied())
    {
        println!("  {l}");
    }

    // Connection by connection: the outcome each kind may end in.
    let expected: Vec<char> = plan.chars().chain(['V']).collect();
    let got: Vec<char> = outcomes.chars().collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "connections accepted != connections made"
    );
    let mismatches: Vec<String> = expected
        .iter()
        .zip(&got)
        .enumerate()
        .filter(|(_, (plan, outcome))| !allowed(**plan).contains(**outcome))
        .map(|(i, (plan, outcome))| format!("#{i}: {plan} ended as {outcome}"))
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} connections ended unexpectedly (seed {seed:#x}): {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(20)]
    );
    let mut counts = BTreeMap::new();
    for c in plan.chars() {
        *counts.entry(c).or_insert(0u64) += 1;
    }
    for (code, kind, _) in CONN_KINDS {
        assert!(
            counts.get(&code).copied().unwrap_or(0) > 0,
            "{kind} never ran (seed {seed:#x})"
        );
    }
    let accepted = got.iter().filter(|&&c| c == 'O').count() as u64;
    let failed = num(&result, "failed");
    assert_eq!(
        failed,
        got.len() as u64 - accepted,
        "listener.failed() != failed connections"
    );
    assert_eq!(
        num(&result, "rejected"),
        0,
        "peers of our own uid were rejected"
    );
    assert_eq!(
        num(&result, "panics"),
        0,
        "the listener panicked: {problems:?}"
    );
    assert_eq!(num(&result, "hangs"), 0, "endpoints hung: {problems:?}");
    assert_eq!(
        num(&conn, "hangs"),
        0,
        "connections never closed: {problems:?}"
    );
    let stall_min: f64 = conn["stall_close_min_ms"].parse().expect("a number");
    assert!(
        stall_min >= HANDSHAKE_TIMEOUT.as_secs_f64() * 1e3 * 0.9,
        "a stalled connection was closed after {stall_min} ms, before its handshake timeout"
    );
    assert_eq!(
        num(&result, "post_frames"),
        num(&conn, "post_frames"),
        "frames after the handshake lost"
    );
    assert_eq!(num(&result, "fds_leaked"), 0, "fds leaked: {problems:?}");
    assert_eq!(
        num(&result, "fds_closed"),
        0,
        "fds of the listener's own were closed"
    );
    let base = num(&result, "base_rss_kib");
    let peak = num(&result, "peak_rss_kib");
    let bound = listener_rss_bound_kib();
    assert!(
        peak <= base + bound,
        "listener peak RSS {peak} KiB > baseline {base} KiB + bound {bound} KiB"
    );

    let mut fig = Figures::new("hostile-listener");
    fig.add("seed", format!("{seed:#x}"))
        .add("connections", plan.len())
        .add("typed_errors", failed)
        .add("handshakes_ok", accepted)
        .add("mismatches", mismatches.len())
        .add("post_frames", num(&result, "post_frames"))
        .add("post_errors", num(&result, "post_errors"))
        .add("fds_sent", num(&conn, "fds_sent"))
        .add("panics", num(&result, "panics"))
        .add("hangs", num(&result, "hangs") + num(&conn, "hangs"))
        .add("fds_leaked", num(&result, "fds_leaked"))
        .add("base_rss_kib", base)
        .add("peak_rss_kib", peak)
        .add("rss_growth_kib", peak.saturating_sub(base))
        .add("rss_bound_kib", bound)
        .add("limit_kib", LIMIT / 1024)
        .add_ms("handshake_timeout", HANDSHAKE_TIMEOUT)
        .add("stalls", num(&conn, "stalls"))
        .add("stall_close_median_ms", &conn["stall_close_median_ms"])
        .add("stall_close_max_ms", &conn["stall_close_max_ms"])
        .add("burst_stalls", num(&conn, "burst_stalls"))
        .add("burst_close_max_ms", &conn["burst_close_max_ms"])
        .add("valid_exchange", 1);
    for (code, kind, _) in CONN_KINDS {
        fig.add(kind, counts.get(&code).copied().unwrap_or(0));
    }
    fig.add_ms("time", elapsed).report();
}

/// A peer that sends a zero-length message without fds among its frames
/// and then leaves: every frame it sent before leaving still comes out
/// (the empty one as a typed error) before `Disconnected`. (Found by the
/// listener part: such frames after a hostile handshake were lost.)
#[test]
fn frames_queued_behind_an_empty_frame_outlive_the_peer() {
    let (raw, sock) = SeqPacketSocket::pair().expect("socketpair");
    let rx = Receiver::<Wire>::from_socket(sock, Config::new().limit(LIMIT));
    for x in [7, 8] {
        send_frame(&raw, &[], &[], FRAME_WAIT).expect("send an empty frame");
        send_frame(&raw, &inline_frame(0, &number_body(x)), &[], FRAME_WAIT)
            .expect("send a number");
    }
    drop(raw);
    for x in [7, 8] {
        match rx.recv_timeout(FRAME_WAIT) {
            Err(RecvTimeoutError::Failed(ChannelError::Frame(e))) => {
                assert_eq!(format!("{e:?}"), "TooShort { len: 0 }")
            }
            other => panic!("expected the empty frame before {x} refused, got {other:?}"),
        }
        match rx.recv_timeout(FRAME_WAIT) {
            Ok(Wire::Number(got)) => assert_eq!(got, x),
            other => panic!("expected Number({x}) (queued before the peer left), got {other:?}"),
        }
    }
    match rx.recv_timeout(FRAME_WAIT) {
        Err(RecvTimeoutError::Disconnected) => {}
        other => panic!("expected Disconnected at the end, got {other:?}"),
    }
}
