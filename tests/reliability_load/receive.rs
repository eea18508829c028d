//! The parent's side of one connection: receives a client's stream until
//! end of stream and checks every message (order, client, payload, each fd
//! by kind, name and content) against what that client must have sent;
//! and what the client says it sent.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use courier::RecvTimeoutError;

use crate::stream::{fd_count, fill, payload_len, tag, Attached, LARGE_MIN};
use crate::support::report::{num, pairs};
use crate::ParentEnd;

/// What one connection delivered.
#[derive(Default, Debug)]
pub struct Received {
    /// The client id of the first message.
    pub client: Option<u32>,
    pub messages: u64,
    /// Messages whose seq was not the previous one plus one.
    pub order_violations: u64,
    /// Messages whose client id differs from the first one's.
    pub wrong_client: u64,
    /// Payloads of the wrong length or content.
    pub bad_payloads: u64,
    pub fds: u64,
    /// Fds whose kind, name and content matched their message.
    pub fds_verified: u64,
    /// Fds of the wrong number for their seq, kind, name or content.
    pub bad_fds: u64,
    pub large: u64,
    pub bytes: u64,
    /// Typed receive errors (each a defect here), first few kept.
    pub errors: Vec<String>,
    /// Why receiving stopped early (a timeout), if it did.
    pub stopped: Option<String>,
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
pub fn receive(ep: ParentEnd, count: u64, deadline: Instant) -> Received {
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
pub struct Sent {
    pub messages: u64,
    pub fds: u64,
    pub bytes: u64,
}

pub fn parse_sent(line: &str, client: u32) -> Sent {
    let fields = pairs(line);
    assert_eq!(num(&fields, "client"), u64::from(client), "{line}");
    Sent {
        messages: num(&fields, "messages"),
        fds: num(&fields, "fds"),
        bytes: num(&fields, "bytes"),
    }
}
