//! A load client (a child role): connects to the parent's listener,
//! waits for the go, sends its whole stream and says what it sent.

use std::time::Duration;

use crate::common::{self, CHILD_TIMEOUT};
use crate::stream::message;
use crate::support::env::env_u64;
use crate::support::say;
use crate::{config, ClientEnd, CLIENT_ENV, COUNT_ENV, GO, SENT_PREFIX};

/// Connects, waits for the go, sends its stream, says what it sent.
pub fn load_client() {
    let client = u32::try_from(env_u64(CLIENT_ENV)).expect("client id");
    let count = env_u64(COUNT_ENV);
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
