//! The courier receiver under attack (a child role): a typed
//! [`Receiver`] with the suite's limit reads exactly the frames each batch
//! notice announces, each receive inside `catch_unwind`, then checks that
//! its fd table is back at its baseline and reads its peak memory.

use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};

use courier::{Config, Receiver, RecvTimeoutError};

use crate::categories::{cat_name, Expect};
use crate::common;
use crate::messages::Wire;
use crate::settings::{FRAME_WAIT, LIMIT, STEP_WAIT};
use crate::support::fds::{closed, new_fds, opened};
use crate::support::{figures, say};
use crate::tally::Tally;

/// The courier receiver under attack: reads exactly the frames each batch
/// notice announces, then checks its fds and memory.
pub fn role_receiver() {
    let listener = courier::transport::Listener::bind(&common::parent_addr()).expect("bind");
    say("ready");
    let data = listener.accept_timeout(STEP_WAIT).expect("accept (data)");
    let control = listener
        .accept_timeout(STEP_WAIT)
        .expect("accept (control)");
    drop(listener);
    let data_fd = data.as_raw_fd();
    let baseline = common::fd_table();
    let base_rss = figures::peak_rss_kib();
    let rx = Receiver::<Wire>::from_socket(data, Config::new().limit(LIMIT));
    let mut tally = Tally::default();
    let mut notice = vec![0u8; 4 + 2 * 4096];
    loop {
        let n = control
            .recv_timeout(&mut notice, STEP_WAIT)
            .expect("a batch notice (the sender hung)");
        match &notice[..n] {
            [] => panic!("the sender closed the lock step early"),
            [b'E'] => break,
            [b'B', lo, hi, entries @ ..] => {
                let count = usize::from(u16::from_le_bytes([*lo, *hi]));
                assert_eq!(entries.len(), 2 * count, "batch notice length");
                for entry in entries.chunks(2) {
                    let got = catch_unwind(AssertUnwindSafe(|| rx.recv_timeout(FRAME_WAIT)));
                    tally.record(entry[0], Expect::from_code(entry[1]), got);
                }
            }
            other => panic!("unknown notice {other:?}"),
        }
        control.send_timeout(b"A", STEP_WAIT).expect("ack");
    }
    // Everything sent has been read; the sender is gone.
    let end = catch_unwind(AssertUnwindSafe(|| rx.recv_timeout(FRAME_WAIT)));
    let disconnected = matches!(end, Ok(Err(RecvTimeoutError::Disconnected)));
    // Held while the receiver lives: the rings it keeps mapped (at most 8
    // hostile ones plus the probe sender's). Anything else is a leak.
    let held = new_fds(&baseline);
    let stray = held
        .iter()
        .filter(|(_, target)| !target.to_string_lossy().starts_with("/memfd:"))
        .count();
    drop(rx);
    let mut expected = baseline;
    expected.remove(&data_fd);
    let now = common::fd_table();
    let opened = opened(&expected, &now);
    let closed = closed(&expected, &now);
    for (fd, target) in &opened {
        say(&format!("leak: fd {fd} -> {}", target.display()));
    }
    let peak_rss = figures::peak_rss_kib();
    for v in &tally.violations {
        say(&format!("violation: {v}"));
    }
    for (code, c) in &tally.cats {
        say(&format!(
            "cat: {} frames={} values={} errors={} violations={}",
            cat_name(*code),
            c.frames,
            c.values,
            c.errors,
            c.violations
        ));
    }
    let kinds: Vec<String> = tally
        .errors
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    say(&format!("errors: {}", kinds.join(" ")));
    let violations: u64 = tally.cats.values().map(|c| c.violations).sum();
    say(&format!(
        "result: frames={} values={} typed_errors={} error_kinds={} probes_ok={} panics={} \
         timeouts={} violations={violations} disconnected={} ring_fds_held={} stray_fds_held={stray} \
         fds_leaked={} fds_closed={} base_rss_kib={base_rss} peak_rss_kib={peak_rss}",
        tally.frames,
        tally.values,
        tally.typed_errors,
        tally.errors.len(),
        tally.probes_ok,
        tally.panics,
        tally.timeouts,
        u8::from(disconnected),
        held.len() - stray,
        opened.len(),
        closed.len(),
    ));
}
