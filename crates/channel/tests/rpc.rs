//! Request/response (`Client::call`, `Endpoint::serve`) across real
//! processes: typed handler errors, many threads through one client with a
//! server that answers out of order, timeouts and late replies, a server
//! killed with calls in flight, fds in requests and responses, `Served`
//! counts with invalid frames interleaved, and requests handed back when the
//! server is gone.
//!
//! Every server runs in a child process (the test binary re-executed in a
//! role, see `transport/tests/common`), except in
//! `serve_counts_an_oversized_frame_as_refused_and_keeps_serving`, whose
//! server runs in a thread so that the test can show what `serve` returned.

#[path = "../../transport/tests/common/mod.rs"]
mod common;

use std::io::{IoSlice, PipeReader, PipeWriter, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::{Guard, CHILD_TIMEOUT};
use courier_channel::{
    Call, CallError, ChannelError, Client, Config, Endpoint, Fd, RecvTimeoutError, Reply,
    SendTimeoutError, Served, HEADER_LEN, MAX_INLINE_FRAME, WIRE_VERSION,
};
use courier_transport::{SendMsg, SeqPacketSocket, Wait};
use nix::sys::socket::MsgFlags;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const ROLES: &[(&str, fn())] = &[
    ("math", math_server),
    ("strict", strict_server),
    ("reverser", reverser),
    ("staller", staller),
    ("hanger", hanger),
    ("pipes", pipe_server),
    ("quitter", quitter),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

/// The timeout of calls that are expected to be answered: long enough for
/// any loaded machine, short enough that a lost response fails the test
/// instead of hanging it.
const CALL: Duration = CHILD_TIMEOUT;

fn config() -> Config {
    Config::new().protocol("courier-rpc-test", 1)
}

/// The server side of a connection to the parent, after the handshake.
fn serve_parent<Q, P, E>() -> Endpoint<Reply<P, E>, Call<Q>>
where
    Q: DeserializeOwned,
    P: Serialize,
    E: Serialize,
{
    Endpoint::handshake(common::connect_to_parent(), config()).expect("child: handshake")
}

/// Starts role `name` and returns it with a client over the handshaken
/// connection, and a raw clone of the connection's socket.
fn start_raw<Q, P, E>(name: &str) -> (Guard, Client<Q, P, E>, SeqPacketSocket)
where
    Q: Serialize,
    P: DeserializeOwned,
    E: DeserializeOwned,
{
    let (child, conn) = common::spawn_connected(name);
    let raw = conn.try_clone().expect("clone the connection");
    let endpoint = Endpoint::handshake(conn, config()).expect("parent: handshake");
    (child, Client::new(endpoint), raw)
}

fn start<Q, P, E>(name: &str) -> (Guard, Client<Q, P, E>)
where
    Q: Serialize,
    P: DeserializeOwned,
    E: DeserializeOwned,
{
    let (child, conn) = common::spawn_connected(name);
    let endpoint = Endpoint::handshake(conn, config()).expect("parent: handshake");
    (child, Client::new(endpoint))
}

// ---- Hand-written frames (the layout of src/wire.rs) ------------------------

/// A valid inline frame header declaring `fd_count` fds and a body of
/// `body_len` bytes, followed by `body`.
fn frame_with(fd_count: u16, body_len: u64, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(b"CR");
    frame.push(WIRE_VERSION);
    frame.push(0); // inline body
    frame.extend_from_slice(&fd_count.to_le_bytes());
    frame.extend_from_slice(&[0, 0]); // reserved
    frame.extend_from_slice(&body_len.to_le_bytes());
    frame.extend_from_slice(body);
    frame
}

/// An honest inline frame around `body`.
fn inline_frame(fd_count: u16, body: &[u8]) -> Vec<u8> {
    frame_with(fd_count, body.len() as u64, body)
}

/// postcard's encoding of `value` (which holds no fd).
fn body_of<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encoding")
}

/// Sends `frame` with `fds` as one message on a raw socket, waiting a
/// bounded time for room.
fn send_raw(raw: &SeqPacketSocket, frame: &[u8], fds: &[BorrowedFd<'_>]) {
    let bufs = [IoSlice::new(frame)];
    let sent = raw
        .send_msg(&SendMsg::new(&bufs).with_fds(fds), Wait::timeout(CALL))
        .expect("raw send");
    assert_eq!(sent, frame.len(), "raw send was short");
}

/// Sends a zero-length message (which courier's transport refuses to send).
fn send_empty(raw: &SeqPacketSocket) {
    let sent = nix::sys::socket::send(raw.as_raw_fd(), &[], MsgFlags::MSG_NOSIGNAL);
    assert_eq!(sent.expect("raw empty send"), 0);
}

// ---- 1. Basic: typed values and typed handler errors ------------------------

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Op {
    Add(i64, i64),
    Sub(i64, i64),
    Mul(i64, i64),
    Div(i64, i64),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum MathError {
    DivByZero,
    Overflow { op: String },
}

fn math(op: Op) -> Result<i64, MathError> {
    let overflow = |name: &str| MathError::Overflow { op: name.into() };
    match op {
        Op::Add(a, b) => a.checked_add(b).ok_or_else(|| overflow("add")),
        Op::Sub(a, b) => a.checked_sub(b).ok_or_else(|| overflow("sub")),
        Op::Mul(a, b) => a.checked_mul(b).ok_or_else(|| overflow("mul")),
        Op::Div(_, 0) => Err(MathError::DivByZero),
        Op::Div(a, b) => a.checked_div(b).ok_or_else(|| overflow("div")),
    }
}

/// Calls the `math` test makes; the child checks `Served::calls` against it.
const MATH_CALLS: u64 = 9;

fn math_server() {
    let endpoint = serve_parent::<Op, i64, MathError>();
    let served = endpoint
        .serve(math)
        .expect("serve returns Ok when the client goes away");
    assert_eq!(
        (served.calls, served.refused),
        (MATH_CALLS, 0),
        "math server: {served:?}"
    );
}

#[test]
fn values_and_typed_remote_errors_come_back_and_the_server_keeps_serving() {
    let (mut child, client) = start::<Op, i64, MathError>("math");

    assert_eq!(client.call(Op::Add(2, 40), CALL).unwrap(), 42);
    assert_eq!(client.call(Op::Sub(2, 40), CALL).unwrap(), -38);
    assert_eq!(client.call(Op::Mul(-6, 7), CALL).unwrap(), -42);

    // The handler's error arrives typed, as a value.
    match client.call(Op::Div(1, 0), CALL) {
        Err(CallError::Remote(MathError::DivByZero)) => {}
        other => panic!("expected Remote(DivByZero), got {other:?}"),
    }
    // ... and the server keeps serving after it.
    assert_eq!(client.call(Op::Div(84, 2), CALL).unwrap(), 42);
    match client.call(Op::Mul(i64::MAX, 2), CALL) {
        Err(CallError::Remote(MathError::Overflow { op })) => assert_eq!(op, "mul"),
        other => panic!("expected Remote(Overflow), got {other:?}"),
    }
    match client.call(Op::Div(i64::MIN, -1), CALL) {
        Err(CallError::Remote(e)) => {
            assert_eq!(e, MathError::Overflow { op: "div".into() })
        }
        other => panic!("expected Remote(Overflow), got {other:?}"),
    }
    assert_eq!(client.call(Op::Add(1, 1), CALL).unwrap(), 2);
    assert_eq!(client.call(Op::Sub(0, 0), CALL).unwrap(), 0);

    // The client goes away: serve returns Ok with the count (checked in
    // the child).
    drop(client);
    child.wait_success();
}

// ---- 2. Concurrency through one client, answers out of order --------------

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
struct Tagged {
    thread: u32,
    seq: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
struct Echo {
    tag: Tagged,
    /// Computed from the tag, so a response cannot be right by accident.
    product: u64,
    /// How many calls the server answered together (in reverse order) with
    /// this one.
    batch: u32,
}

const THREADS: u32 = 8;
const CALLS_PER_THREAD: u32 = 200;
/// The most calls the reversing server collects before answering them.
const BATCH: usize = 8;

fn product(tag: Tagged) -> u64 {
    (u64::from(tag.thread) + 1) * 1_000_003 + u64::from(tag.seq) * 7
}

/// A server loop of its own (not `serve`): collects up to `BATCH` calls,
/// then answers them last first.
fn reverser() {
    let endpoint = serve_parent::<Tagged, Echo, String>();
    let mut batch: Vec<Call<Tagged>> = Vec::with_capacity(BATCH);
    loop {
        match endpoint.recv_timeout(CHILD_TIMEOUT) {
            Ok(call) => batch.push(call),
            Err(RecvTimeoutError::Disconnected) => return,
            Err(e) => panic!("reverser: {e:?}"),
        }
        while batch.len() < BATCH {
            // What is queued now, or arrives very soon: the other threads'
            // calls.
            match endpoint.try_recv() {
                Ok(call) => batch.push(call),
                Err(_) => match endpoint.recv_timeout(Duration::from_millis(2)) {
                    Ok(call) => batch.push(call),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    Err(e) => panic!("reverser: {e:?}"),
                },
            }
        }
        let size = batch.len() as u32;
        for (id, tag) in batch.drain(..).rev() {
            let echo = Echo {
                tag,
                product: product(tag),
                batch: size,
            };
            if endpoint.send((id, Ok(echo))).is_err() {
                return; // the client is gone
            }
        }
    }
}

#[test]
fn many_threads_share_one_client_and_out_of_order_replies_reach_their_callers() {
    let (mut child, client) = start::<Tagged, Echo, String>("reverser");
    let started = Instant::now();
    let reordered: u32 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let client = &client;
                s.spawn(move || {
                    let mut reordered = 0;
                    for seq in 0..CALLS_PER_THREAD {
                        let tag = Tagged { thread, seq };
                        let echo = client
                            .call(tag, CALL)
                            .unwrap_or_else(|e| panic!("call {tag:?}: {e:?}"));
                        assert_eq!(echo.tag, tag, "a response for another call arrived");
                        assert_eq!(echo.product, product(tag), "response for {tag:?}");
                        if echo.batch > 1 {
                            reordered += 1;
                        }
                    }
                    reordered
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    eprintln!(
        "{} calls from {THREADS} threads in {:?}; {reordered} answered in a reversed batch",
        THREADS * CALLS_PER_THREAD,
        started.elapsed()
    );
    assert!(
        reordered > 0,
        "the server never answered out of order: the test tested nothing"
    );
    drop(client);
    child.wait_success();
}

// ---- 3. Timeouts and late replies, 4. server death ------------------------

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Ctl {
    Add(i64, i64),
    /// Not answered until a `Release`.
    Stall,
    /// Answers every stalled call (late, with [`LATE`]), then this one with 0.
    Release,
    /// Never answered.
    Hang(u32),
    /// Answered with how many `Hang`s arrived so far.
    Count,
}

/// The value of a late reply: a call that receives it got another call's
/// response.
const LATE: i64 = -999;

fn staller() {
    let endpoint = serve_parent::<Ctl, i64, String>();
    let mut stalled = Vec::new();
    loop {
        let (id, ctl) = match endpoint.recv_timeout(CHILD_TIMEOUT) {
            Ok(call) => call,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(e) => panic!("staller: {e:?}"),
        };
        let replies = match ctl {
            Ctl::Add(a, b) => vec![(id, Ok(a + b))],
            Ctl::Stall => {
                stalled.push(id);
                vec![]
            }
            Ctl::Release => {
                let mut late: Vec<Reply<i64, String>> =
                    stalled.drain(..).map(|s| (s, Ok(LATE))).collect();
                late.push((id, Ok(0)));
                late
            }
            other => vec![(id, Err(format!("staller does not do {other:?}")))],
        };
        for reply in replies {
            if endpoint.send(reply).is_err() {
                return;
            }
        }
    }
}

fn expect_timeout(client: &Client<Ctl, i64, String>, timeout: Duration) {
    let started = Instant::now();
    let got = client.call(Ctl::Stall, timeout);
    let took = started.elapsed();
    assert!(
        matches!(got, Err(CallError::Timeout)),
        "unanswered call: expected Timeout, got {got:?}"
    );
    assert!(
        took >= timeout,
        "timed out early: after {took:?} of {timeout:?}"
    );
    assert!(
        took < timeout + Duration::from_secs(10),
        "timed out far too late: after {took:?} of {timeout:?}"
    );
}

#[test]
fn an_unanswered_call_times_out_and_its_late_reply_goes_to_no_other_call() {
    let (mut child, client) = start::<Ctl, i64, String>("staller");
    assert_eq!(client.call(Ctl::Add(1, 2), CALL).unwrap(), 3);

    // Alone: the timed-out caller was the one reading.
    expect_timeout(&client, Duration::from_millis(300));
    assert_eq!(client.call(Ctl::Add(2, 3), CALL).unwrap(), 5);

    // With another thread calling meanwhile: either may be reading when
    // the deadline passes.
    std::thread::scope(|s| {
        let client = &client;
        let stalled = s.spawn(move || expect_timeout(client, Duration::from_millis(500)));
        let busy = s.spawn(move || {
            for i in 0..50 {
                assert_eq!(client.call(Ctl::Add(i, i), CALL).unwrap(), 2 * i);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        stalled.join().unwrap();
        busy.join().unwrap();
    });

    // Now the server sends both late replies, then answers the Release:
    // the late ones (ids of calls that gave up) must be dropped.
    assert_eq!(
        client.call(Ctl::Release, CALL).unwrap(),
        0,
        "a late reply was delivered to the Release call"
    );
    std::thread::scope(|s| {
        for t in 0..4 {
            let client = &client;
            s.spawn(move || {
                for i in 0..20 {
                    assert_eq!(client.call(Ctl::Add(t, i), CALL).unwrap(), t + i);
                }
            });
        }
    });
    assert_eq!(client.call(Ctl::Add(20, 22), CALL).unwrap(), 42);
    drop(client);
    child.wait_success();
}

fn hanger() {
    let endpoint = serve_parent::<Ctl, i64, String>();
    let mut hung = 0;
    loop {
        let (id, ctl) = match endpoint.recv_timeout(CHILD_TIMEOUT) {
            Ok(call) => call,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(e) => panic!("hanger: {e:?}"),
        };
        let reply = match ctl {
            Ctl::Hang(_) => {
                hung += 1;
                continue;
            }
            Ctl::Count => Ok(hung),
            Ctl::Add(a, b) => Ok(a + b),
            other => Err(format!("hanger does not do {other:?}")),
        };
        if endpoint.send((id, reply)).is_err() {
            return;
        }
    }
}

/// Whether `got` is what a call to a dead server may return: `Disconnected`,
/// or `NotSent` (the receiver gone) with the very request handed back.
fn failed_as_disconnected(got: &Result<i64, CallError<Ctl, String>>, request: &Ctl) -> bool {
    match got {
        Err(CallError::Disconnected) => true,
        Err(CallError::NotSent(SendTimeoutError::Disconnected(q))) => q == request,
        _ => false,
    }
}

#[test]
fn killing_the_server_ends_every_call_in_flight_with_disconnected() {
    let (mut child, client) = start::<Ctl, i64, String>("hanger");
    assert_eq!(client.call(Ctl::Add(1, 1), CALL).unwrap(), 2);

    let results = std::thread::scope(|s| {
        let client = &client;
        let callers: Vec<_> = (0..4)
            .map(|i| {
                s.spawn(move || {
                    let got = client.call(Ctl::Hang(i), CALL);
                    (i, got, Instant::now())
                })
            })
            .collect();

        // Wait (bounded) until the server holds all four calls, asking it
        // through the same client meanwhile.
        let deadline = Instant::now() + CHILD_TIMEOUT;
        loop {
            let held = client.call(Ctl::Count, CALL).expect("count");
            if held == 4 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the server got {held} of 4 calls"
            );
            std::thread::sleep(Duration::from_millis(5));
        }

        let killed_at = Instant::now();
        child.0.kill().expect("SIGKILL the server");
        let status = child.wait();
        assert_eq!(status.signal(), Some(9), "server status {status:?}");

        callers
            .into_iter()
            .map(|c| {
                let (i, got, at) = c.join().unwrap();
                (i, got, at.saturating_duration_since(killed_at))
            })
            .collect::<Vec<_>>()
    });
    for (i, got, after) in &results {
        assert!(
            failed_as_disconnected(got, &Ctl::Hang(*i)),
            "in-flight call {i}: expected Disconnected, got {got:?}"
        );
        assert!(
            *after < Duration::from_secs(10),
            "in-flight call {i} took {after:?} after the kill to return"
        );
    }
    eprintln!(
        "in-flight calls returned {:?} after the kill",
        results.iter().map(|r| r.2).collect::<Vec<_>>()
    );

    // Later calls fail promptly too, from several threads.
    std::thread::scope(|s| {
        for t in 0..4 {
            let client = &client;
            s.spawn(move || {
                for i in 0..3 {
                    let request = Ctl::Add(t, i);
                    let started = Instant::now();
                    let got = client.call(request.clone(), CALL);
                    let took = started.elapsed();
                    assert!(
                        failed_as_disconnected(&got, &request),
                        "call after the server's death: got {got:?}"
                    );
                    assert!(
                        took < Duration::from_secs(5),
                        "call after the server's death took {took:?}"
                    );
                }
            });
        }
    });
}

// ---- 5. fds in responses and requests, typed handler errors --------------

#[derive(Serialize, Deserialize, Debug)]
enum PipeReq {
    /// Make a pipe: the write end comes back, the server keeps the read end.
    Open,
    /// Read the kept read end to its end and answer with what was written.
    Collect,
    /// Write the text into the passed write end.
    Feed(Fd<PipeWriter>, String),
    /// Not something this server does.
    Bogus(u32),
}

#[derive(Serialize, Deserialize, Debug)]
enum PipeResp {
    Writer(Fd<PipeWriter>),
    Text(String),
    Fed(usize),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum PipeError {
    NoPipeOpen,
    Unsupported { what: u32 },
}

fn pipe_server() {
    let endpoint = serve_parent::<PipeReq, PipeResp, PipeError>();
    let mut kept: Option<PipeReader> = None;
    let served = endpoint
        .serve(|request| match request {
            PipeReq::Open => {
                let (reader, writer) = std::io::pipe().expect("pipe");
                kept = Some(reader);
                // The server's copy of the write end closes when the
                // response has been sent.
                Ok(PipeResp::Writer(Fd::new(writer)))
            }
            PipeReq::Collect => {
                let mut reader = kept.take().ok_or(PipeError::NoPipeOpen)?;
                let mut text = String::new();
                reader.read_to_string(&mut text).expect("read the pipe");
                Ok(PipeResp::Text(text))
            }
            PipeReq::Feed(mut writer, text) => {
                writer.write_all(text.as_bytes()).expect("write the pipe");
                Ok(PipeResp::Fed(text.len()))
            }
            PipeReq::Bogus(what) => Err(PipeError::Unsupported { what }),
        })
        .expect("serve returns Ok when the client goes away");
    assert_eq!((served.calls, served.refused), (7, 0), "{served:?}");
}

#[test]
fn responses_and_requests_carry_fds_and_handler_errors_are_typed() {
    let (mut child, client) = start::<PipeReq, PipeResp, PipeError>("pipes");

    // A response carrying the write end of a pipe the server made.
    let mut writer = match client.call(PipeReq::Open, CALL) {
        Ok(PipeResp::Writer(w)) => w,
        other => panic!("expected a writer, got {other:?}"),
    };
    common::assert_cloexec("the received pipe end", writer.as_fd());
    let text = "written by the client into the server's pipe";
    writer.write_all(text.as_bytes()).unwrap();
    drop(writer); // the only write end left: the server reads to its end
    match client.call(PipeReq::Collect, CALL) {
        Ok(PipeResp::Text(got)) => assert_eq!(got, text),
        other => panic!("expected the text back, got {other:?}"),
    }

    // A request carrying an fd.
    let (mut reader, writer) = std::io::pipe().unwrap();
    match client.call(PipeReq::Feed(Fd::new(writer), "fed".into()), CALL) {
        Ok(PipeResp::Fed(3)) => {}
        other => panic!("expected Fed(3), got {other:?}"),
    }
    // The request's write end was moved: the server's copy is gone too.
    let mut fed = String::new();
    reader.read_to_string(&mut fed).unwrap();
    assert_eq!(fed, "fed");

    // Typed handler errors, and the server still serves after them.
    match client.call(PipeReq::Bogus(7), CALL) {
        Err(CallError::Remote(e)) => assert_eq!(e, PipeError::Unsupported { what: 7 }),
        other => panic!("expected Remote(Unsupported), got {other:?}"),
    }
    match client.call(PipeReq::Collect, CALL) {
        Err(CallError::Remote(e)) => assert_eq!(e, PipeError::NoPipeOpen),
        other => panic!("expected Remote(NoPipeOpen), got {other:?}"),
    }
    let mut writer = match client.call(PipeReq::Open, CALL) {
        Ok(PipeResp::Writer(w)) => w,
        other => panic!("expected a writer, got {other:?}"),
    };
    writer.write_all(b"again").unwrap();
    drop(writer);
    match client.call(PipeReq::Collect, CALL) {
        Ok(PipeResp::Text(got)) => assert_eq!(got, "again"),
        other => panic!("expected the text back, got {other:?}"),
    }

    drop(client);
    child.wait_success();
}

// ---- 6. Served counts with invalid frames interleaved ---------------------

/// Valid calls and invalid frames the `strict` test sends; the child checks
/// `Served` against them.
const STRICT_CALLS: u64 = 5;
const STRICT_REFUSED: u64 = 7;

fn strict_server() {
    let endpoint = serve_parent::<Op, i64, MathError>();
    let served = endpoint
        .serve(math)
        .expect("serve returns Ok when the client goes away");
    assert_eq!(
        (served.calls, served.refused),
        (STRICT_CALLS, STRICT_REFUSED),
        "strict server: {served:?}"
    );
}

/// An id no client call uses: a frame that were wrongly accepted would be
/// answered with it, and the answer dropped by the client.
const FOREIGN_ID: u64 = u64::MAX - 7;

/// The invalid frames of the `strict` test, in the order they are sent.
fn send_invalid(raw: &SeqPacketSocket, which: u32) {
    match which {
        // Not a courier frame at all.
        0 => send_raw(raw, b"this is not a courier frame", &[]),
        // A valid header with a body that is no postcard value.
        1 => send_raw(raw, &inline_frame(0, &[0xff; 11]), &[]),
        // A valid value of the wrong type: a string where an Op belongs
        // (its length, 25, read as a variant index).
        2 => {
            let body = body_of(&(FOREIGN_ID, "a string instead of an Op"));
            send_raw(raw, &inline_frame(0, &body), &[]);
        }
        // A valid call followed by a byte.
        3 => {
            let mut body = body_of(&(FOREIGN_ID, Op::Add(1, 1)));
            body.push(0);
            send_raw(raw, &inline_frame(0, &body), &[]);
        }
        // A valid call with an fd it does not use.
        4 => {
            let body = body_of(&(FOREIGN_ID, Op::Add(1, 1)));
            let null = std::fs::File::open("/dev/null").unwrap();
            send_raw(raw, &inline_frame(1, &body), &[null.as_fd()]);
        }
        // An empty message.
        5 => send_empty(raw),
        // A header declaring more body than the frame carries.
        6 => {
            let body = body_of(&(FOREIGN_ID, Op::Add(1, 1)));
            let frame = frame_with(0, body.len() as u64 + 5, &body);
            send_raw(raw, &frame, &[]);
        }
        _ => unreachable!(),
    }
}

#[test]
fn serve_counts_calls_and_refused_frames_and_returns_ok_when_the_client_goes() {
    let (mut child, client, raw) = start_raw::<Op, i64, MathError>("strict");
    let mut invalid = 0..STRICT_REFUSED as u32;
    let mut next_invalid = |n: usize| {
        for _ in 0..n {
            send_invalid(&raw, invalid.next().expect("an invalid frame left"));
        }
    };

    assert_eq!(client.call(Op::Add(1, 2), CALL).unwrap(), 3);
    next_invalid(2);
    assert_eq!(client.call(Op::Mul(3, 4), CALL).unwrap(), 12);
    next_invalid(3);
    // A handler error is an answered call, not a refused frame.
    match client.call(Op::Div(1, 0), CALL) {
        Err(CallError::Remote(MathError::DivByZero)) => {}
        other => panic!("expected Remote(DivByZero), got {other:?}"),
    }
    next_invalid(2);
    assert_eq!(client.call(Op::Sub(10, 4), CALL).unwrap(), 6);
    assert_eq!(client.call(Op::Div(9, 3), CALL).unwrap(), 3);
    assert!(invalid.is_empty(), "every invalid frame was sent");

    // The client goes away, while a clone of its socket stays open here:
    // the server must still see the end of the stream, return Ok and check
    // the counts.
    drop(client);
    child.wait_success();
    drop(raw);
}

/// A frame longer than any inline frame (`MAX_INLINE_FRAME`) is an invalid
/// frame like the others: `serve` should count it as refused and go on.
#[test]
fn serve_counts_an_oversized_frame_as_refused_and_keeps_serving() {
    let (client_end, server_end) = SeqPacketSocket::pair().unwrap();
    let raw = client_end.try_clone().unwrap();
    let server = std::thread::spawn(move || {
        Endpoint::<Reply<i64, MathError>, Call<Op>>::from_socket(server_end, config()).serve(math)
    });
    let client = Client::<Op, i64, MathError>::new(Endpoint::from_socket(client_end, config()));

    assert_eq!(client.call(Op::Add(1, 2), CALL).unwrap(), 3);
    let len = MAX_INLINE_FRAME + 4096;
    let oversized = inline_frame(0, &vec![0; len - HEADER_LEN]);
    send_raw(&raw, &oversized, &[]);
    let after = client.call(Op::Add(2, 3), Duration::from_secs(5));

    drop(client);
    let served: Result<Served, ChannelError> = server.join().unwrap();
    drop(raw);
    let counts = served.as_ref().map(|s| (s.calls, s.refused));
    assert!(
        matches!(after, Ok(5)) && matches!(counts, Ok((2, 1))),
        "after an oversized frame: the next call got {after:?} (expected Ok(5)); \
         serve returned {served:?} (expected Ok(Served {{ calls: 2, refused: 1 }}))"
    );
}

// ---- 7. NotSent hands the request back -------------------------------------

/// Completes the handshake and exits at once.
fn quitter() {
    drop(serve_parent::<PipeReq, PipeResp, PipeError>());
}

#[test]
fn a_call_to_a_gone_server_hands_the_request_back_with_its_fd() {
    let (mut child, client) = start::<PipeReq, PipeResp, PipeError>("quitter");
    child.wait_success();

    let (mut reader, writer) = std::io::pipe().unwrap();
    let started = Instant::now();
    let got = client.call(PipeReq::Feed(Fd::new(writer), "handed back".into()), CALL);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the call took {took:?}");
    let request = match got {
        Err(CallError::NotSent(e)) => {
            assert!(e.is_disconnected(), "expected Disconnected, got {e:?}");
            e.into_inner()
        }
        other => panic!("expected NotSent, got {other:?}"),
    };
    // The request came back whole, its write end open and working.
    let PipeReq::Feed(mut writer, text) = request else {
        panic!("another request came back: {request:?}");
    };
    writer.write_all(text.as_bytes()).unwrap();
    drop(writer);
    let mut got = String::new();
    reader.read_to_string(&mut got).unwrap();
    assert_eq!(got, "handed back");

    // And again: the client stays usable (and says the same).
    match client.call(PipeReq::Bogus(1), CALL) {
        Err(CallError::NotSent(e)) => {
            assert!(matches!(e.into_inner(), PipeReq::Bogus(1)));
        }
        other => panic!("expected NotSent, got {other:?}"),
    }
}

/// A reply that takes 1 ms to decode: senders outpace the reader, so the
/// queue never runs dry.
#[derive(Debug, Serialize)]
struct SlowReply(u32);

impl<'de> Deserialize<'de> for SlowReply {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        std::thread::sleep(Duration::from_millis(1));
        u32::deserialize(d).map(SlowReply)
    }
}

/// A caller reading replies for others still stops at its own deadline:
/// a server flooding replies to calls nobody made cannot keep it waiting
/// (before the fix, such a call never returned: each receive found a
/// reply queued and returned at once, so the deadline was never checked).
#[test]
fn a_flood_of_unknown_replies_does_not_hold_a_call_past_its_deadline() {
    use courier_channel::{endpoints, Call, Client, Reply};
    let (client_end, server_end) =
        endpoints::<Call<u32>, Reply<SlowReply, String>>().expect("endpoints");
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (replies, _requests) = server_end.split();
    let floods: Vec<_> = (0..2u64)
        .map(|t| {
            let (flag, replies) = (flooding.clone(), replies.clone());
            std::thread::spawn(move || {
                let mut id = (1 + t) << 40;
                while flag.load(std::sync::atomic::Ordering::Relaxed) {
                    match replies.send_timeout((id, Ok(SlowReply(0))), Duration::from_millis(10)) {
                        Ok(()) | Err(courier_channel::SendTimeoutError::Timeout(_)) => id += 1,
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50)); // the queue is full
    let client = Client::new(client_end);
    let start = std::time::Instant::now();
    let got = client.call(7, Duration::from_millis(200));
    let took = start.elapsed();
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(
        matches!(got, Err(courier_channel::CallError::Timeout)),
        "{got:?}"
    );
    assert!(took >= Duration::from_millis(200), "early: {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "held past its deadline: {took:?}"
    );
    drop(client);
    for flood in floods {
        flood.join().unwrap();
    }
}
