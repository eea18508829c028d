//! The hostile side of the listener (a child role): connections of
//! every kind in [`CONN_KINDS`], one after another, that stall, close,
//! lie in their hello, or complete the handshake and then send hostile
//! frames; how long the listener took to close each; and the outcomes the
//! listener may give each kind ([`allowed`]).

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use courier::channel::WIRE_VERSION;
use courier::transport::{SeqPacketSocket, MAX_FDS};
use courier::Address;

use crate::common;
use crate::pool::Pool;
use crate::settings::{
    seed, CLAIMS, CLOSE_SLACK, CONNECTIONS_ENV, FRAME_WAIT, HANDSHAKE_TIMEOUT, LIMIT, PROTOCOL,
    PROTOCOL_VERSION, STEP_WAIT,
};
use crate::support::env::env_u64;
use crate::support::figures::median_max;
use crate::support::rng::{Random, XorShiftStar};
use crate::support::say;
use crate::support::wire::{self, header, inline_frame, send_frame, Enc};

/// Hostile connection kinds: plan code, name, weight (per mille).
pub const CONN_KINDS: [(char, &str, u64); 14] = [
    ('c', "connect_close", 80),
    ('s', "stall", 5),
    ('b', "stall_burst", 1),
    ('m', "bad_magic", 100),
    ('v', "wrong_version", 80),
    ('t', "truncated", 80),
    ('e', "empty_or_tiny", 40),
    ('o', "over_long", 80),
    ('r', "reserved_bits", 60),
    ('u', "name_not_utf8", 50),
    ('p', "wrong_protocol", 100),
    ('f', "fds_in_hello", 80),
    ('h', "garbage_after_handshake", 64),
    ('x', "random_hello", 180),
];

/// How many stalled connections a burst opens at once.
pub const BURST: usize = 6;

/// The listener's outcomes each kind of connection may end in.
pub fn allowed(plan: char) -> &'static str {
    match plan {
        'c' => "C",
        's' | 'b' => "T",
        'm' => "N",
        'v' => "W",
        't' | 'o' | 'r' | 'u' | 'f' => "M",
        'e' => "NC",
        'p' => "P",
        'h' | 'V' => "O",
        'x' => "NMWP",
        _ => "",
    }
}

/// Reads from a hostile connection until the listener closes it; the
/// time that took, and whether the listener's hello came first. `None`
/// when it stayed open [`CLOSE_SLACK`] past the handshake timeout (`wait`
/// lengthens that for connections queued behind others).
fn wait_closed(sock: &SeqPacketSocket, since: Instant, wait: Duration) -> Option<(Duration, bool)> {
    let deadline = since + wait + HANDSHAKE_TIMEOUT + CLOSE_SLACK;
    let mut buf = [0u8; 1024];
    let mut hello_seen = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match sock.recv_timeout(&mut buf, left) {
            Ok(0) => return Some((since.elapsed(), hello_seen)),
            Ok(n) => hello_seen |= n >= 21 && buf.starts_with(b"CRHS"),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return None,
            // Reset, or a frame we cannot read: either way it is over.
            Err(_) => return Some((since.elapsed(), hello_seen)),
        }
    }
}

/// The hostile side of the listener: connections that stall, close, lie,
/// or handshake and then misbehave, one after another.
pub fn role_connector() {
    let seed = seed();
    let connections = env_u64(CONNECTIONS_ENV) as usize;
    let addr = common::parent_addr();
    let pool = Pool::new();
    let mut rng = XorShiftStar::new(seed ^ 0x4c49_5354_454e);
    // Hellos for our protocol unless changed, with our limit.
    let hello = |name: &[u8], version: u32| wire::hello(name, version, LIMIT as u64);
    let total: u64 = CONN_KINDS.iter().map(|k| k.2).sum();
    let mut plan = String::new();
    let (mut stall_close, mut burst_close) = (Vec::new(), Vec::new());
    let (mut hangs, mut hellos, mut post_frames, mut fds_sent) = (0u64, 0u64, 0u64, 0u64);
    let connect = |addr: &Address| {
        SeqPacketSocket::connect_timeout(addr, STEP_WAIT).expect("connect to the listener")
    };
    while plan.len() < connections {
        let mut at = rng.below(total);
        let kind = CONN_KINDS
            .iter()
            .find(|k| {
                let hit = at < k.2;
                at = at.saturating_sub(k.2);
                hit
            })
            .expect("a kind")
            .0;
        if kind == 'b' {
            // Stalled connections queued behind each other: the last is
            // closed about BURST handshake timeouts after it connected.
            let socks: Vec<_> = (0..BURST)
                .map(|_| (connect(&addr), Instant::now()))
                .collect();
            for (sock, since) in &socks {
                plan.push('b');
                match wait_closed(sock, *since, HANDSHAKE_TIMEOUT * BURST as u32) {
                    Some((t, seen)) => {
                        burst_close.push(t);
                        hellos += u64::from(seen);
                    }
                    None => hangs += 1,
                }
            }
            continue;
        }
        let sock = connect(&addr);
        let since = Instant::now();
        plan.push(kind);
        let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
        let good = hello(PROTOCOL.as_bytes(), PROTOCOL_VERSION);
        let lie: Vec<u8> = match kind {
            'c' => {
                drop(sock);
                continue;
            }
            's' => Vec::new(),
            'm' => {
                let len = 4 + rng.index(274); // not over-long: that is checked first
                let mut bytes = rng.bytes(len);
                if bytes.starts_with(b"CRHS") {
                    bytes[3] = b'X';
                }
                if rng.chance(1, 3) {
                    bytes[..4].copy_from_slice(b"CRHX");
                }
                bytes
            }
            'v' => {
                let mut h = good.clone();
                h[4] = [0, 1, WIRE_VERSION + 1, 255][rng.index(4)];
                h
            }
            't' => good[..4 + rng.index(17)].to_vec(),
            'e' => good[..rng.index(4)].to_vec(),
            'o' => match rng.below(3) {
                0 => {
                    let mut h = good.clone();
                    let extra = 1 + rng.index(300);
                    h.extend(rng.bytes(extra));
                    h
                }
                1 => {
                    let mut h = good.clone();
                    h[20] = 255; // claims a longer name than it has
                    h
                }
                _ => {
                    let mut h = good.clone();
                    h.resize(1 << 16, b'z'); // longer than any hello
                    h
                }
            },
            'r' => {
                let mut h = good.clone();
                if rng.chance(1, 2) {
                    h[5] |= 2 << rng.below(7);
                } else {
                    h[6 + rng.index(2)] = 1 + rng.below(255) as u8;
                }
                h
            }
            'u' => {
                let name = [0xff, 0xfe, b'a', 0xc0, 0x80];
                hello(&name[..2 + rng.index(4)], PROTOCOL_VERSION)
            }
            'p' => match rng.below(3) {
                0 => hello(b"another-protocol", PROTOCOL_VERSION),
                1 => hello(PROTOCOL.as_bytes(), PROTOCOL_VERSION + 1),
                _ => hello(b"", 0),
            },
            'f' => {
                let n = if rng.chance(1, 3) {
                    MAX_FDS
                } else {
                    1 + rng.index(MAX_FDS)
                };
                fds = (0..n).map(|_| pool.fd(pool.any(&mut rng))).collect();
                good.clone()
            }
            'h' => good.clone(),
            _ => {
                let len = rng.index(300);
                let mut bytes = rng.bytes(len);
                if len >= 5 && rng.chance(1, 2) {
                    bytes[..4].copy_from_slice(b"CRHS");
                    if rng.chance(1, 2) {
                        bytes[4] = WIRE_VERSION;
                    }
                }
                bytes
            }
        };
        if kind != 's' {
            send_frame(&sock, &lie, &fds, FRAME_WAIT).expect("send a hostile hello");
            fds_sent += fds.len() as u64;
        }
        if kind == 'h' {
            // The handshake completes; then frames the endpoint must refuse
            // (or take), then the connection goes.
            let mut buf = [0u8; 1024];
            let n = sock
                .recv_timeout(&mut buf, STEP_WAIT)
                .expect("the listener's hello");
            assert!(buf[..n].starts_with(b"CRHS"), "the listener's hello");
            hellos += 1;
            let count = 1 + rng.below(8);
            for i in 0..count {
                let (mut frame, n) = match rng.below(5) {
                    0 => {
                        let len = 1 + rng.index(200);
                        (rng.bytes(len), rng.index(3))
                    }
                    1 => (header(0, 0, 0, CLAIMS[rng.index(CLAIMS.len())]), 0),
                    2 => (Vec::new(), rng.index(3)),
                    3 => {
                        let n = 1 + rng.index(MAX_FDS);
                        let all: Vec<u64> = (0..n as u64).collect();
                        // Ask::Pipes over fds of any kind.
                        (
                            inline_frame(n as u16, &Enc::default().var(3).list(&all).done()),
                            n,
                        )
                    }
                    _ => (
                        inline_frame(0, &Enc::default().var(2).var(1 << 40).done()),
                        0,
                    ),
                };
                if frame.is_empty() && i + 1 == count {
                    // After an empty message without fds, a departed peer's
                    // end of stream is recognised by the bytes still queued
                    // (FIONREAD): end on a frame that has some. Empty frames
                    // after the last one with bytes read as the end.
                    let len = 1 + rng.index(40);
                    frame = rng.bytes(len);
                }
                let fds: Vec<_> = (0..n).map(|_| pool.fd(pool.any(&mut rng))).collect();
                send_frame(&sock, &frame, &fds, FRAME_WAIT).expect("send after the handshake");
                fds_sent += n as u64;
                post_frames += 1;
            }
            continue; // closed here; the listener serves it to the end
        }
        match wait_closed(&sock, since, Duration::ZERO) {
            Some((t, seen)) => {
                if kind == 's' {
                    stall_close.push(t);
                }
                hellos += u64::from(seen);
            }
            None => {
                hangs += 1;
                say(&format!(
                    "violation: connection {} ({kind}) was never closed",
                    plan.len()
                ));
            }
        }
    }
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    let min = stall_close.iter().min().copied().unwrap_or_default();
    let (median, max) = if stall_close.is_empty() {
        (Duration::ZERO, Duration::ZERO)
    } else {
        median_max(&mut stall_close)
    };
    let burst_max = burst_close.iter().max().copied().unwrap_or_default();
    say(&format!("plan: {plan}"));
    say(&format!(
        "connector: hangs={hangs} hellos={hellos} post_frames={post_frames} fds_sent={fds_sent} \
         stalls={} stall_close_min_ms={} stall_close_median_ms={} stall_close_max_ms={} \
         burst_stalls={} burst_close_max_ms={}",
        stall_close.len(),
        ms(min),
        ms(median),
        ms(max),
        burst_close.len(),
        ms(burst_max),
    ));
}
