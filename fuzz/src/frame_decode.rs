//! Target `frame_decode`: the input is one frame, sent as one SEQPACKET
//! message (no fds) by a raw peer to a typed `Receiver<Message>` with the
//! default configuration.
//!
//! Checks: the receive returns a value or a typed refusal (never a panic,
//! end of stream or a timeout); the heap grows by at most
//! [`HEAP_BOUND`] while it runs; the receiver takes the next valid frame.

use courier_channel::{Config, Receiver};
use courier_transport::SeqPacketSocket;

use crate::{alloc, check_outcome, check_usable, send_raw, Message, WAIT};

/// The most heap one receive may take above what was in use before it: a
/// frame is at most 128 KiB, its decoded value a small multiple of that,
/// and serde preallocates at most 1 MiB for a sequence whatever length it
/// claims.
pub const HEAP_BOUND: usize = 4 << 20;

/// Runs one input; returns what the receive gave (see
/// [`check_outcome`](crate::check_outcome)), or "skipped".
pub fn run(data: &[u8]) -> &'static str {
    let (peer, sock) = SeqPacketSocket::pair().expect("socketpair");
    let rx = Receiver::<Message>::from_socket(sock, Config::new());
    if !send_raw(&peer, data, &[]) {
        return "skipped";
    }
    let mark = alloc::mark();
    let outcome = rx.recv_timeout(WAIT);
    let what = check_outcome(&outcome);
    drop(outcome);
    let grew = mark.peak_growth();
    assert!(
        grew <= HEAP_BOUND,
        "one frame of {} bytes made the receiver allocate {grew} bytes",
        data.len()
    );
    check_usable(&peer, &rx);
    what
}
