//! Reliability suite 5, load: eight client processes each send a stream of
//! numbered messages into one courier [`Listener`] in this process, all at
//! once, and every message must arrive, in order, with its fds.
//!
//! Each client is this test binary re-executed in the `load_client` role
//! (see `common::role`). It connects with [`Endpoint::connect`], waits for
//! the parent's go (so the eight streams really overlap), then sends
//! `messages_per_client` values `Load { client, seq, payload, attached }`:
//!
//! * `payload`: 8 to 32 bytes whose content is a function of
//!   `(client, seq, index)`; ten messages per client (a hundred in the
//!   long version) carry 100 KiB to about 1 MiB instead, so the
//!   large-value path (the sender's shared ring) runs under load too;
//! * `attached`: every 64th message carries one fd, every 4096th four; each
//!   fd is a memfd named after `(client, seq)` holding a tag, or the read
//!   end of a pipe holding the tag, so the receiver checks that it arrived
//!   with the right message.
//!
//! The client prints what it sent (`load-sent: client=.. messages=.. fds=..
//! bytes=..`) and exits. The parent accepts the eight connections, receives
//! from each in a thread of its own until end of stream, and asserts:
//! messages sent = received per client, sequence numbers strictly
//! consecutive per client (order preserved, nothing lost or doubled), every
//! payload and fd verified, fds sent = received, no client failed, no
//! connection refused, and the parent's fd table back at its baseline once
//! the connections are gone (the test holds `common::fd_lock()`).
//!
//! Figures: one `figures: suite=load ...` line with the counts, the
//! throughput over the whole run (from the go to the last end of stream:
//! messages/s and MB/s of payload) and the wall time.
//!
//! Sizes: the short version (CI, debug build) sends 8 x 100,000 messages as
//! well; `COURIER_LOAD_MESSAGES=N` overrides the count per client. The long
//! version, `COURIER_SOAK=1 cargo test --release --test reliability_load --
//! --nocapture`, sends 8 x 1,000,000. There is no randomness: every byte
//! and fd is a function of `(client, seq)`.

#[path = "../crates/transport/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{PipeReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Guard, ADDR_ENV, CHILD_TIMEOUT};
use courier::{AbstractName, Address, Bytes, Config, Endpoint, Fd, Listener, RecvTimeoutError};
use nix::sys::memfd::{memfd_create, MFdFlags};
use serde::{Deserialize, Serialize};
use support::figures::{peak_rss_kib, scaled, Figures};
use support::{say, wait_line, wait_within, with_stdout_pipe};

// ---- what travels -----------------------------------------------------

/// One message of a client's stream.
#[derive(Serialize, Deserialize)]
struct Load {
    /// Which client sent it (0..CLIENTS).
    client: u32,
    /// Its place in that client's stream, from 0.
    seq: u64,
    /// [`payload_len`] bytes of [`fill`].
    payload: Bytes,
    /// The fds [`fd_count`] says, each tagged with `(client, seq)`.
    attached: Vec<Attached>,
}

/// An fd riding in a message.
#[derive(Serialize, Deserialize)]
enum Attached {
    /// A memfd named `courier-load-c{client}-s{seq}-{i}` holding the tag.
    Memfd(Fd<File>),
    /// The read end of a pipe holding the tag (its write end closed).
    Pipe(Fd<PipeReader>),
}

/// What the parent sends each client once all are connected.
const GO: u64 = 0x60;

/// The parent's end: sends the go, receives the stream.
type ParentEnd = Endpoint<u64, Load>;
/// A client's end.
type ClientEnd = Endpoint<Load, u64>;

const CLIENTS: u32 = 8;
/// Messages per client unless `COURIER_LOAD_MESSAGES` says otherwise.
const SHORT_MESSAGES: u64 = 100_000;
const LONG_MESSAGES: u64 = 1_000_000;
/// Messages per client carrying a large payload (sizes cycle over ten).
fn large_per_client() -> u64 {
    scaled(10, 100)
}
/// How many different large sizes there are.
const LARGE_SIZES: usize = 10;
/// The smallest large payload: above the 64 KiB inline threshold.
const LARGE_MIN: usize = 100 << 10;
/// One message in this many carries an fd ...
const FD_EVERY: u64 = 64;
/// ... and one in this many carries [`MULTI_FDS`].
const MULTI_FD_EVERY: u64 = 4096;
const MULTI_FDS: usize = 4;

const CLIENT_ENV: &str = "COURIER_LOAD_CLIENT";
const COUNT_ENV: &str = "COURIER_LOAD_COUNT";
const MESSAGES_ENV: &str = "COURIER_LOAD_MESSAGES";
const SENT_PREFIX: &str = "load-sent:";

fn config() -> Config {
    Config::new()
        .protocol("courier-load-test", 1)
        .handshake_timeout(CHILD_TIMEOUT)
}

fn messages_per_client() -> u64 {
    match std::env::var(MESSAGES_ENV) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{MESSAGES_ENV}={v} is not a count")),
        Err(_) => scaled(SHORT_MESSAGES, LONG_MESSAGES),
    }
}

/// The sequence numbers carrying a large payload: ten spread over the
/// stream (all of them when it is shorter).
fn large_index(seq: u64, count: u64) -> Option<u64> {
    let every = (count / large_per_client()).max(1);
    (seq % every == every / 2).then_some(seq / every)
}

fn payload_len(seq: u64, count: u64) -> usize {
    match large_index(seq, count) {
        // 100 KiB, 197 KiB, ... up to about 1 MiB.
        Some(k) => LARGE_MIN + (k as usize % LARGE_SIZES) * (97 << 10),
        None => 8 + (seq % 25) as usize,
    }
}

/// Byte `i` of the payload of `(client, seq)`.
fn fill(client: u32, seq: u64, i: usize) -> u8 {
    (u64::from(client) * 131 + seq * 7 + i as u64 * 13 + (i as u64 >> 8)) as u8
}

fn fd_count(seq: u64) -> usize {
    if seq % MULTI_FD_EVERY == MULTI_FD_EVERY - 1 {
        MULTI_FDS
    } else if seq % FD_EVERY == FD_EVERY - 1 {
        1
    } else {
        0
    }
}

/// What fd `i` of `(client, seq)` holds.
fn tag(client: u32, seq: u64, i: usize) -> String {
    format!("courier-load-c{client}-s{seq}-{i}")
}

/// The `i`th fd of `(client, seq)`: memfds and pipes in turn.
fn attach(client: u32, seq: u64, i: usize) -> Attached {
    let tag = tag(client, seq, i);
    if (seq / FD_EVERY + i as u64).is_multiple_of(2) {
        let fd = memfd_create(tag.as_str(), MFdFlags::MFD_CLOEXEC).expect("memfd_create");
        let mut file = File::from(fd);
        file.write_all(tag.as_bytes()).expect("write memfd");
        Attached::Memfd(Fd::new(file))
    } else {
        let (reader, mut writer) = std::io::pipe().expect("pipe");
        writer.write_all(tag.as_bytes()).expect("write pipe");
        Attached::Pipe(Fd::new(reader))
    }
}

fn message(client: u32, seq: u64, count: u64) -> Load {
    let len = payload_len(seq, count);
    Load {
        client,
        seq,
        payload: Bytes::from((0..len).map(|i| fill(client, seq, i)).collect::<Vec<u8>>()),
        attached: (0..fd_count(seq)).map(|i| attach(client, seq, i)).collect(),
    }
}

// ---- the client role ----------------------------------------------------

const ROLES: &[(&str, fn())] = &[("load_client", load_client)];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

fn env_number(name: &str) -> u64 {
    let v = std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    v.parse()
        .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
}

/// Connects, waits for the go, sends its stream, says what it sent.
fn load_client() {
    let client = u32::try_from(env_number(CLIENT_ENV)).expect("client id");
    let count = env_number(COUNT_ENV);
    let ep = ClientEnd::connect(&common::parent_addr(), config()).expect("connect to the listener");
    let go = ep.recv_timeout(CHILD_TIMEOUT).expect("the go");
    assert_eq!(go, GO, "unexpected go value");
    let (mut fds, mut bytes) = (0u64, 0u64);
    for seq in 0..count {
        let msg = message(client, seq, count);
        let (n_fds, n_bytes) = (msg.attached.len() as u64, msg.payload.len() as u64);
        if let Err(e) = ep.send_timeout(msg, send_timeout()) {
            panic!("client {client}: send of seq {seq} failed: {e} ({e:?})");
        }
        fds += n_fds;
        bytes += n_bytes;
    }
    say(&format!(
        "{SENT_PREFIX} client={client} messages={count} fds={fds} bytes={bytes}"
    ));
}

/// How long one send may wait for the parent to make room; a parent that
/// stops reading for this long has hung.
fn send_timeout() -> Duration {
    Duration::from_secs(60)
}

// ---- the parent ------------------------------------------------------------

/// What one connection delivered.
#[derive(Default, Debug)]
struct Received {
    /// The client id of the first message.
    client: Option<u32>,
    messages: u64,
    /// Messages whose seq was not the previous one plus one.
    order_violations: u64,
    /// Messages whose client id differs from the first one's.
    wrong_client: u64,
    /// Payloads of the wrong length or content.
    bad_payloads: u64,
    fds: u64,
    /// Fds whose kind, name and content matched their message.
    fds_verified: u64,
    /// Fds of the wrong number for their seq, kind, name or content.
    bad_fds: u64,
    large: u64,
    bytes: u64,
    /// Typed receive errors (each a defect here), first few kept.
    errors: Vec<String>,
    /// Why receiving stopped early (a timeout), if it did.
    stopped: Option<String>,
}

impl Received {
    fn error(&mut self, what: String) {
        if self.errors.len() < 8 {
            self.errors.push(what);
        } else if self.errors.len() == 8 {
            self.errors.push("...".into());
        }
    }
}

/// Reads `fd`'s tag and checks it against `want` (and, for a memfd, its
/// name as `/proc` shows it).
fn check_fd(attached: Attached, want: &str) -> Result<(), String> {
    let mut got = vec![0u8; want.len() + 1];
    match attached {
        Attached::Memfd(file) => {
            let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
                .map_err(|e| format!("readlink: {e}"))?;
            let expect = format!("/memfd:{want} (deleted)");
            if link.as_path() != std::path::Path::new(&expect) {
                return Err(format!("memfd is {link:?}, expected {expect:?}"));
            }
            let n = file
                .read_at(&mut got, 0)
                .map_err(|e| format!("read memfd: {e}"))?;
            got.truncate(n);
        }
        Attached::Pipe(pipe) => {
            got.clear();
            pipe.into_inner()
                .take(want.len() as u64 + 1)
                .read_to_end(&mut got)
                .map_err(|e| format!("read pipe: {e}"))?;
        }
    }
    if got == want.as_bytes() {
        Ok(())
    } else {
        Err(format!(
            "fd holds {:?}, expected {want:?}",
            String::from_utf8_lossy(&got)
        ))
    }
}

/// Receives from one client until end of stream (or `deadline`).
fn receive(ep: ParentEnd, count: u64, deadline: Instant) -> Received {
    let mut r = Received::default();
    let mut next = 0u64;
    loop {
        let msg = match ep.recv_deadline(deadline) {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                r.stopped = Some(format!(
                    "no end of stream by the deadline, after {} messages",
                    r.messages
                ));
                break;
            }
            Err(e) => {
                r.error(format!("after {} messages: {e}: {:?}", r.messages, e));
                continue;
            }
        };
        r.messages += 1;
        let client = *r.client.get_or_insert(msg.client);
        if msg.client != client {
            r.wrong_client += 1;
        }
        if msg.seq != next {
            r.order_violations += 1;
            if r.order_violations <= 4 {
                r.error(format!(
                    "client {client}: seq {} where {next} was due",
                    msg.seq
                ));
            }
        }
        next = msg.seq.wrapping_add(1);
        let (c, seq) = (msg.client, msg.seq);
        let len = payload_len(seq, count);
        if len >= LARGE_MIN {
            r.large += 1;
        }
        r.bytes += msg.payload.len() as u64;
        if msg.payload.len() != len
            || msg
                .payload
                .iter()
                .enumerate()
                .any(|(i, &b)| b != fill(c, seq, i))
        {
            r.bad_payloads += 1;
            r.error(format!(
                "client {c} seq {seq}: payload of {} bytes is not the one sent ({len} bytes)",
                msg.payload.len()
            ));
        }
        let fds = msg.attached.len();
        r.fds += fds as u64;
        if fds != fd_count(seq) {
            r.bad_fds += fds as u64;
            r.error(format!(
                "client {c} seq {seq}: {fds} fds, {} sent",
                fd_count(seq)
            ));
            continue;
        }
        for (i, attached) in msg.attached.into_iter().enumerate() {
            match check_fd(attached, &tag(c, seq, i)) {
                Ok(()) => r.fds_verified += 1,
                Err(e) => {
                    r.bad_fds += 1;
                    r.error(format!("client {c} seq {seq} fd {i}: {e}"));
                }
            }
        }
    }
    if r.messages != count || next != count {
        r.error(format!(
            "client {:?}: {} messages received, last seq {}, {count} expected",
            r.client,
            r.messages,
            next.wrapping_sub(1)
        ));
    }
    r
}

/// What a client said it sent.
#[derive(Debug, Default, PartialEq)]
struct Sent {
    messages: u64,
    fds: u64,
    bytes: u64,
}

fn parse_sent(line: &str, client: u32) -> Sent {
    let fields: BTreeMap<&str, u64> = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.parse().expect("number in load-sent line")))
        .collect();
    assert_eq!(fields.get("client"), Some(&u64::from(client)), "{line}");
    Sent {
        messages: fields["messages"],
        fds: fields["fds"],
        bytes: fields["bytes"],
    }
}

/// Waits (bounded) until this process's fd table is `baseline` again;
/// returns what differs if it does not get there.
fn fds_back_to(baseline: &BTreeMap<i32, PathBuf>, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let now = common::fd_table();
        if now == *baseline {
            return Vec::new();
        }
        if Instant::now() >= deadline {
            let mut diff: Vec<String> = now
                .iter()
                .filter(|(fd, t)| baseline.get(fd) != Some(t))
                .map(|(fd, t)| format!("+{fd} -> {}", t.display()))
                .collect();
            diff.extend(
                baseline
                    .iter()
                    .filter(|(fd, t)| now.get(fd) != Some(t))
                    .map(|(fd, t)| format!("-{fd} -> {}", t.display())),
            );
            return diff;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn eight_clients_stream_into_one_listener() {
    let _fds = common::fd_lock();
    let count = messages_per_client();
    // Generous but bounded: no progress for this long is a hang.
    let limit = Duration::from_secs(scaled(120, 600));
    let baseline = common::fd_table();
    let started = Instant::now();

    let name = AbstractName::random().expect("random name");
    let addr_env = common::hex(name.as_bytes());
    let listener =
        Listener::<u64, Load>::bind(&Address::from(name), config()).expect("bind the listener");

    let mut clients: Vec<(Guard, mpsc::Receiver<String>)> = (0..CLIENTS)
        .map(|c| {
            let mut cmd = common::role("load_client");
            cmd.env(ADDR_ENV, &addr_env)
                .env(CLIENT_ENV, c.to_string())
                .env(COUNT_ENV, count.to_string());
            let lines = with_stdout_pipe(&mut cmd);
            (Guard::spawn(cmd), lines)
        })
        .collect();

    let endpoints: Vec<ParentEnd> = (0..CLIENTS)
        .map(|i| {
            listener
                .accept_timeout(CHILD_TIMEOUT)
                .unwrap_or_else(|e| panic!("accept of client connection {i}: {e} ({e:?})"))
        })
        .collect();
    assert_eq!(listener.rejected(), 0, "connections refused");
    assert_eq!(listener.failed(), 0, "handshakes failed");

    let go = Instant::now();
    for ep in &endpoints {
        ep.send(GO).expect("send the go");
    }
    let deadline = go + limit;
    let results: Vec<Result<Received, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = endpoints
            .into_iter()
            .map(|ep| s.spawn(move || receive(ep, count, deadline)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|p| support::panic_text(&*p)))
            .collect()
    });
    let elapsed = go.elapsed();

    // What the clients say they sent, and how they ended.
    let mut client_failures = Vec::new();
    let mut sent = BTreeMap::new();
    for (c, (child, lines)) in clients.iter_mut().enumerate() {
        let c = c as u32;
        match wait_line(lines, SENT_PREFIX, CHILD_TIMEOUT) {
            Some(line) => {
                sent.insert(c, parse_sent(&line, c));
            }
            None => client_failures.push(format!("client {c}: no {SENT_PREFIX} line")),
        }
        match wait_within(child, CHILD_TIMEOUT) {
            Some(status) if status.success() => {}
            Some(status) => client_failures.push(format!(
                "client {c} failed: {status:?} (signal {:?})",
                status.signal()
            )),
            None => client_failures.push(format!("client {c} did not exit")),
        }
    }
    drop(clients);
    drop(listener);

    let mut failures = client_failures.clone();
    let mut received = BTreeMap::new();
    for result in results {
        match result {
            Ok(r) => {
                if let Some(stopped) = &r.stopped {
                    failures.push(format!("client {:?}: {stopped}", r.client));
                }
                for e in &r.errors {
                    failures.push(e.clone());
                }
                match r.client {
                    Some(c) => {
                        if received.insert(c, r).is_some() {
                            failures.push(format!("two connections claim client {c}"));
                        }
                    }
                    None => failures.push("a connection delivered nothing".into()),
                }
            }
            Err(panic) => failures.push(format!("receive thread panicked: {panic}")),
        }
    }

    let fd_diff = fds_back_to(&baseline, Duration::from_secs(10));
    let total = |f: fn(&Received) -> u64| received.values().map(f).sum::<u64>();
    let messages_sent: u64 = sent.values().map(|s: &Sent| s.messages).sum();
    let fds_sent: u64 = sent.values().map(|s: &Sent| s.fds).sum();
    let bytes_sent: u64 = sent.values().map(|s: &Sent| s.bytes).sum();
    let messages_received = total(|r| r.messages);
    let fds_received = total(|r| r.fds);
    let bytes_received = total(|r| r.bytes);
    let order_violations = total(|r| r.order_violations);
    let bad = total(|r| r.wrong_client + r.bad_payloads + r.bad_fds);
    let secs = elapsed.as_secs_f64();

    Figures::new("load")
        .add("clients", CLIENTS)
        .add("messages_per_client", count)
        .add("messages_sent", messages_sent)
        .add("messages_received", messages_received)
        .add("order_violations", order_violations)
        .add("fds_sent", fds_sent)
        .add("fds_received", fds_received)
        .add("fds_verified", total(|r| r.fds_verified))
        .add("fds_leaked", fd_diff.len())
        .add("large_values", total(|r| r.large))
        .add("bytes_received", bytes_received)
        .add("bad_messages", bad)
        .add("client_failures", client_failures.len())
        .add("receive_failures", failures.len() - client_failures.len())
        .add(
            "msgs_per_s",
            format!("{:.0}", messages_received as f64 / secs),
        )
        .add(
            "mb_per_s",
            format!("{:.1}", bytes_received as f64 / secs / 1e6),
        )
        .add_ms("elapsed", elapsed)
        .add_ms("wall", started.elapsed())
        .add("peak_rss_kib", peak_rss_kib())
        .report();

    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    assert_eq!(sent.len(), CLIENTS as usize, "clients that reported");
    assert_eq!(received.len(), CLIENTS as usize, "clients received from");
    for c in 0..CLIENTS {
        let (s, r) = (&sent[&c], &received[&c]);
        assert_eq!(s.messages, count, "client {c} sent");
        assert_eq!(r.messages, s.messages, "client {c}: received vs sent");
        assert_eq!(r.fds, s.fds, "client {c}: fds received vs sent");
        assert_eq!(
            r.bytes, s.bytes,
            "client {c}: payload bytes received vs sent"
        );
    }
    assert_eq!(messages_received, messages_sent);
    assert_eq!(messages_sent, u64::from(CLIENTS) * count);
    assert_eq!(order_violations, 0, "order violations");
    assert_eq!(bad, 0, "messages with a wrong client, payload or fd");
    assert_eq!(fds_received, fds_sent);
    assert_eq!(total(|r| r.fds_verified), fds_sent, "fds verified");
    assert_eq!(bytes_received, bytes_sent);
    assert!(
        total(|r| r.large) >= u64::from(CLIENTS) * large_per_client().min(count),
        "large values received"
    );
    assert!(
        fd_diff.is_empty(),
        "fd table not back to its baseline:\n{}",
        fd_diff.join("\n")
    );
}
