//! Helpers shared by courier-pipe's integration tests: raw pipes, raw
//! frames, recognisable contents, bounded receives.
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use courier_pipe::PipeTransport;
use courier_transport::{FrameTransport, Wait};
use nix::fcntl::OFlag;

/// A generous bound for anything that should happen "soon".
pub const SOON: Duration = Duration::from_secs(10);

/// A new pipe (close-on-exec): (read end, write end).
pub fn raw_pipe() -> (File, File) {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
    (File::from(r), File::from(w))
}

/// A transport that reads from a raw pipe the test writes with std, and
/// writes into a second pipe whose read end is returned (so its sends
/// have somewhere to go): (transport, raw writer, read end of its output).
pub fn fed_transport() -> (PipeTransport, File, File) {
    let (r_in, w_in) = raw_pipe();
    let (r_out, w_out) = raw_pipe();
    let t = PipeTransport::new(OwnedFd::from(r_in), OwnedFd::from(w_out)).expect("new");
    (t, w_in, r_out)
}

/// The wire form of one frame: little-endian u32 length, then the bytes.
pub fn wire(frame: &[u8]) -> Vec<u8> {
    let mut out = (frame.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(frame);
    out
}

/// `len` bytes that depend on `seed` and on the position, so a misplaced,
/// lost or foreign byte is noticed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends one frame (one slice).
pub fn send(t: &PipeTransport, frame: &[u8], wait: Wait) -> io::Result<()> {
    t.send_frame(&[IoSlice::new(frame)], &[], wait)
}

/// Receives one frame into a fresh Vec.
pub fn recv(t: &PipeTransport, max_len: usize, wait: Wait) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let got = t.recv_frame(&mut buf, max_len, &mut Vec::new(), 0, wait)?;
    Ok(got.map(|len| {
        buf.truncate(len);
        buf
    }))
}

/// Receives one frame, waiting at most [`SOON`]; panics on anything but a
/// frame.
pub fn recv_soon(t: &PipeTransport, max_len: usize) -> Vec<u8> {
    recv(t, max_len, Wait::Until(Instant::now() + SOON))
        .expect("recv")
        .expect("a frame, not end of stream")
}

/// A deadline `ms` milliseconds from now.
pub fn after_ms(ms: u64) -> Wait {
    Wait::Until(Instant::now() + Duration::from_millis(ms))
}

/// Bytes queued in the pipe behind `fd` (FIONREAD).
pub fn queued(fd: impl AsFd) -> usize {
    courier_transport::pipe::queued_bytes(fd.as_fd()).expect("FIONREAD")
}

/// Runs `f` on a thread and waits for it at most `limit`: `Some(result)`
/// if it finished, `None` if it is still running (the thread is then left
/// to the caller's clean-up, which must unblock it).
pub fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> (Option<T>, mpsc::Receiver<T>) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => (Some(v), rx),
        Err(_) => (None, rx),
    }
}

/// VmRSS or VmHWM of this process, in bytes, from /proc/self/status.
pub fn status_kib(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<usize>()
        .expect("number")
        * 1024
}
