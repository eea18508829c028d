//! The courier listener under attack (a child role): accepts connection
//! after connection with a short handshake timeout, records how each
//! ended (a letter per connection, in order), serves the ones that
//! complete the handshake until they go, and at the end checks its fd
//! table and reads its peak memory.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use courier::{Config, ConnectError, Listener, RecvTimeoutError};

use crate::common;
use crate::messages::{Ask, Reply};
use crate::settings::{
    FINISH, FRAME_WAIT, HANDSHAKE_TIMEOUT, LIMIT, PROTOCOL, PROTOCOL_VERSION, STEP_WAIT,
};
use crate::support::fds::{closed, opened};
use crate::support::report::variant_name;
use crate::support::{figures, panic_text, say};

/// The letter an error stands for in the listener's `outcomes:` line.
fn outcome_code(e: &ConnectError) -> char {
    match e {
        ConnectError::Timeout { .. } => 'T',
        ConnectError::Closed => 'C',
        ConnectError::NotCourier => 'N',
        ConnectError::Malformed { .. } => 'M',
        ConnectError::WireVersion { .. } => 'W',
        ConnectError::ProtocolMismatch { .. } => 'P',
        ConnectError::Io(_) => 'I',
        ConnectError::Unauthorized { .. } => 'U',
        _ => 'Z',
    }
}

/// The listener's config (a valid client uses it too).
pub fn server_config() -> Config {
    Config::new()
        .protocol(PROTOCOL, PROTOCOL_VERSION)
        .limit(LIMIT)
        .handshake_timeout(HANDSHAKE_TIMEOUT)
}

/// The courier listener under attack.
pub fn role_server() {
    let run_limit = Duration::from_secs(figures::scaled(240, 2400));
    let listener =
        Listener::<Reply, Ask>::bind(&common::parent_addr(), server_config()).expect("bind");
    let baseline = common::fd_table();
    let base_rss = figures::peak_rss_kib();
    say("ready");
    let deadline = Instant::now() + run_limit;
    let mut outcomes = String::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut panics, mut hangs, mut post_frames, mut post_values, mut post_errors) =
        (0, 0, 0, 0, 0);
    let mut finished = false;
    while !finished {
        assert!(
            Instant::now() < deadline,
            "the listener ran past {run_limit:?}"
        );
        let got = catch_unwind(AssertUnwindSafe(|| listener.accept_timeout(STEP_WAIT)));
        let endpoint = match got {
            Err(panic) => {
                panics += 1;
                say(&format!(
                    "violation: accept panicked: {}",
                    panic_text(&*panic)
                ));
                outcomes.push('X');
                continue;
            }
            Ok(Err(ConnectError::Io(e))) if e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("no connection for {STEP_WAIT:?}: the hostile side hung")
            }
            Ok(Err(e)) => {
                outcomes.push(outcome_code(&e));
                *errors.entry(variant_name(&format!("{e:?}"))).or_default() += 1;
                continue;
            }
            Ok(Ok(endpoint)) => endpoint,
        };
        outcomes.push('O');
        // A connection that completed the handshake: serve it until it
        // goes (hostile) or says it is done (the valid client).
        loop {
            let got = catch_unwind(AssertUnwindSafe(|| endpoint.recv_timeout(FRAME_WAIT)));
            match got {
                Err(panic) => {
                    panics += 1;
                    say(&format!(
                        "violation: recv panicked: {}",
                        panic_text(&*panic)
                    ));
                }
                Ok(Ok(Ask::Ping(x))) => {
                    endpoint
                        .send_timeout(Reply::Pong(x + 1), FRAME_WAIT)
                        .expect("reply to a ping");
                }
                Ok(Ok(Ask::Finish(FINISH))) => {
                    finished = true;
                    break;
                }
                Ok(Ok(_)) => {
                    post_frames += 1;
                    post_values += 1;
                }
                Ok(Err(RecvTimeoutError::Failed(_))) => {
                    post_frames += 1;
                    post_errors += 1;
                }
                Ok(Err(RecvTimeoutError::Disconnected)) => break,
                Ok(Err(other)) => {
                    hangs += 1;
                    say(&format!("violation: endpoint gave {other:?}"));
                    break;
                }
            }
        }
    }
    let failed = listener.failed();
    let rejected = listener.rejected();
    let now = common::fd_table();
    let leaked = opened(&baseline, &now);
    for (fd, target) in &leaked {
        say(&format!("leak: fd {fd} -> {}", target.display()));
    }
    let lost = closed(&baseline, &now).len();
    let peak_rss = figures::peak_rss_kib();
    let kinds: Vec<String> = errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
    say(&format!("errors: {}", kinds.join(" ")));
    say(&format!("outcomes: {outcomes}"));
    say(&format!(
        "result: failed={failed} rejected={rejected} panics={panics} hangs={hangs} \
         post_frames={post_frames} post_values={post_values} post_errors={post_errors} \
         fds_leaked={} fds_closed={lost} base_rss_kib={base_rss} peak_rss_kib={peak_rss}",
        leaked.len()
    ));
}
