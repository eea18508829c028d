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
//!
//! Layout: the test and the settings are here; [`stream`] holds what a
//! client sends, [`client`] the client role, [`receive`] the parent's
//! checks of one connection.

#[path = "../../crates/transport/tests/common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

mod client;
mod receive;
mod stream;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Guard, ADDR_ENV, CHILD_TIMEOUT};
use courier::{Config, Endpoint, Listener};
use receive::{parse_sent, receive, Received, Sent};
use stream::{large_per_client, Load};
use support::child::{describe, protocol_config, random_address, spawn_piped, Lines};
use support::env::env_u64_or;
use support::fds::{diff_lines, settle};
use support::figures::{peak_rss_kib, scaled, Figures};
use support::{wait_line, wait_within};

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

const CLIENT_ENV: &str = "COURIER_LOAD_CLIENT";
const COUNT_ENV: &str = "COURIER_LOAD_COUNT";
const MESSAGES_ENV: &str = "COURIER_LOAD_MESSAGES";
const SENT_PREFIX: &str = "load-sent:";

/// What both ends use.
fn config() -> Config {
    protocol_config("courier-load-test")
}

fn messages_per_client() -> u64 {
    env_u64_or(MESSAGES_ENV, scaled(SHORT_MESSAGES, LONG_MESSAGES))
}

// ---- the client role ----------------------------------------------------

const ROLES: &[(&str, fn())] = &[("load_client", client::load_client)];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

// ---- the test ---------------------------------------------------------------

#[test]
fn eight_clients_stream_into_one_listener() {
    let _fds = common::fd_lock();
    let count = messages_per_client();
    // Generous but bounded: no progress for this long is a hang.
    let limit = Duration::from_secs(scaled(120, 600));
    let baseline = common::fd_table();
    let started = Instant::now();

    let (addr, addr_env) = random_address();
    let listener = Listener::<u64, Load>::bind(&addr, config()).expect("bind the listener");

    let mut clients: Vec<(Guard, Lines)> = (0..CLIENTS)
        .map(|c| {
            let mut cmd = common::role("load_client");
            cmd.env(ADDR_ENV, &addr_env)
                .env(CLIENT_ENV, c.to_string())
                .env(COUNT_ENV, count.to_string());
            spawn_piped(cmd)
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
            Some(status) => {
                client_failures.push(format!("client {c} failed: {}", describe(status)))
            }
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

    let fd_diff = diff_lines(&baseline, &settle(&baseline, Duration::from_secs(10)));
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
