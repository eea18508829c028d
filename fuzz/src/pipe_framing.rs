//! Target `pipe_framing`: the input is the byte stream a courier-pipe
//! reader reads from a pipe, with a small limit.
//!
//! Input: byte 0 bit 0 chooses the reader: 0 the transport itself
//! (`PipeTransport::recv_frame` with a maximum of `1 + 16 * byte 1`), 1 a
//! typed `Receiver<Message>` over it with a limit of `16 * byte 1`; the
//! rest (up to 60 KiB) is written to the pipe, which is then closed.
//!
//! Checks: what the reader returns, call by call, is what a reference
//! reading of the stream predicts: each frame whole (over the typed
//! receiver: a value or a typed refusal), a frame above the maximum
//! reported as too long and skipped, a stream that ends inside a frame or
//! its length reported as torn, then the clean end; and while it reads, the
//! heap grows by at most [`raw_bound`] (transport) or [`TYPED_BOUND`].

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};

use courier_channel::{ChannelError, Config, FrameError, Receiver, RecvTimeoutError, HEADER_LEN};
use courier_pipe::{PipeTransport, PREFIX_LEN};
use courier_transport::{FrameTransport, TransportError, Wait};

use crate::{alloc, Input, Message, WAIT};

/// What one read of the stream gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A whole frame.
    Frame(&'a [u8]),
    /// A length prefix above the maximum.
    TooLong(usize),
    /// The stream ended inside a frame or a length prefix.
    Torn,
    /// The stream ended between frames.
    End,
}

/// The reference reading of `stream` by a reader with maximum `max_len`.
pub fn reference(stream: &[u8], max_len: usize) -> Vec<Item<'_>> {
    let mut items = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            items.push(Item::End);
            return items;
        }
        let Some((prefix, after)) = rest.split_first_chunk::<PREFIX_LEN>() else {
            items.push(Item::Torn);
            items.push(Item::End);
            return items;
        };
        let len = u32::from_le_bytes(*prefix) as usize;
        if len > max_len {
            items.push(Item::TooLong(len));
        }
        let Some((frame, after)) = after.split_at_checked(len) else {
            items.push(Item::Torn);
            items.push(Item::End);
            return items;
        };
        if len <= max_len {
            items.push(Item::Frame(frame));
        }
        rest = after;
    }
}

/// The most the transport's reader may allocate while reading with
/// maximum `max_len`: its 64 KiB read-ahead, and a frame's buffer (at
/// least 4 KiB), which may be held twice while it is handed over.
pub fn raw_bound(max_len: usize) -> usize {
    (64 << 10) + 2 * max_len.max(4096) + (16 << 10)
}

/// The most a typed receiver with a limit of at most 4 KiB may allocate:
/// the transport's share, the decoded value, and serde's preallocation
/// of at most 1 MiB for a sequence whatever length it claims.
pub const TYPED_BOUND: usize = 2 << 20;

/// A reading transport over a new pipe holding `stream` (then closed).
pub fn fed(stream: &[u8]) -> PipeTransport {
    let (r, mut w) = std::io::pipe().expect("pipe");
    w.write_all(stream).expect("write the stream");
    drop(w);
    let sink: File = OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    PipeTransport::new(r, sink).expect("pipe transport")
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let typed = input.byte() & 1 == 1;
    let size = usize::from(input.byte()) * 16;
    let stream = input.rest();
    // A pipe holds 64 KiB at least: the stream fits without a reader.
    let stream = &stream[..stream.len().min(60 << 10)];
    if typed {
        typed_reads(stream, size);
    } else {
        raw_reads(stream, size + 1);
    }
}

fn raw_reads(stream: &[u8], max_len: usize) {
    let t = fed(stream);
    let expected = reference(stream, max_len);
    let mark = alloc::mark();
    for (i, want) in expected.iter().enumerate() {
        let mut buf = Vec::new();
        let got = t.recv_frame(&mut buf, max_len, &mut Vec::new(), 0, Wait::timeout(WAIT));
        let ok = match (&got, want) {
            (Ok(Some(len)), Item::Frame(frame)) => buf.get(..*len) == Some(frame),
            (Ok(None), Item::End) => true,
            (Err(e), Item::TooLong(len)) => matches!(
                TransportError::of(e),
                Some(&TransportError::Truncated { len: l, capacity, fds: 0 })
                    if l == *len && capacity == max_len
            ),
            (Err(e), Item::Torn) => e.kind() == ErrorKind::UnexpectedEof,
            _ => false,
        };
        assert!(
            ok,
            "read {i} with maximum {max_len}: expected {want:?}, got {:?}",
            got.map(|len| len.map(|len| buf.get(..len).map(<[u8]>::to_vec)))
        );
    }
    let grew = mark.peak_growth();
    assert!(
        grew <= raw_bound(max_len),
        "reading {} bytes with maximum {max_len} allocated {grew} bytes",
        stream.len()
    );
}

fn typed_reads(stream: &[u8], limit: usize) {
    let max_len = HEADER_LEN + limit;
    let expected = reference(stream, max_len);
    let rx = Receiver::<Message>::with_transport(Box::new(fed(stream)), Config::new().limit(limit));
    let mark = alloc::mark();
    for (i, want) in expected.iter().enumerate() {
        let got = rx.recv_timeout(WAIT);
        let ok = match (&got, want) {
            (Ok(_), Item::Frame(_)) => true,
            (
                Err(RecvTimeoutError::Failed(
                    ChannelError::Frame(_) | ChannelError::Decode(_) | ChannelError::Refused(_),
                )),
                Item::Frame(_),
            ) => true,
            (
                Err(RecvTimeoutError::Failed(ChannelError::Frame(FrameError::TooLong {
                    len: l,
                    max,
                }))),
                Item::TooLong(len),
            ) => l == len && *max == max_len,
            (Err(RecvTimeoutError::Failed(ChannelError::Io(e))), Item::Torn) => {
                e.kind() == ErrorKind::UnexpectedEof
            }
            (Err(RecvTimeoutError::Disconnected), Item::End) => true,
            _ => false,
        };
        assert!(
            ok,
            "receive {i} with limit {limit}: expected {want:?}, got {got:?}"
        );
    }
    let grew = mark.peak_growth();
    assert!(
        grew <= TYPED_BOUND,
        "receiving {} bytes with limit {limit} allocated {grew} bytes",
        stream.len()
    );
}
