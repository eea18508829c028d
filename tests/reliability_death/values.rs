//! What travels from a child to the parent ([`Up`]): values whose
//! contents follow from their sequence number (and, for big ones, from a
//! seeded draw both sides make), and the parent's check of each value it
//! receives against the one the child sent.

use std::io::{PipeReader, Read};
use std::os::fd::AsFd;

use courier::{Bytes, Endpoint, Fd, Receiver, RecvTimeoutError};
use serde::{Deserialize, Serialize};

use crate::common;
use crate::support::rng::{Random, SplitMix};
use crate::tally::Tally;
use crate::BOUND;

/// Child to parent. The parent sends nothing (`()`).
#[derive(Serialize, Deserialize)]
pub enum Up {
    /// `send` phase: value `seq` of the stream; `text` is [`small_text`].
    Small { seq: u64, text: String },
    /// `large` phase: `data` is [`base`]`[offset..offset + len]`, with
    /// `offset` and `len` the `seq`-th draw of [`big_shape`].
    Big { seq: u64, offset: u64, data: Bytes },
    /// `fds` phase: `1 + seq % 3` pipes, each holding [`pipe_text`], and a
    /// channel's receiving end holding `seq` whose sender the child keeps.
    Carry {
        seq: u64,
        pipes: Vec<Fd<PipeReader>>,
        nested: Receiver<u64>,
    },
}

pub type ParentEnd = Endpoint<(), Up>;
pub type ChildEnd = Endpoint<Up, ()>;

/// Values an `fds` child sends before it waits to be killed.
pub const CARRIES: u64 = 48;

/// Big values: from 1 to 6 MiB, slices of an 8 MiB pseudo-random block.
const BIG_MIN: u64 = 1 << 20;
const BIG_MAX: u64 = 6 << 20;
const BASE_LEN: usize = 8 << 20;

pub fn small_text(seq: u64) -> String {
    format!("small-{seq}-{}", "x".repeat((seq % 61) as usize))
}

pub fn pipe_text(seq: u64, j: usize) -> String {
    format!("pipe {j} of value {seq}")
}

/// The 8 MiB block big values are cut from (the same in both processes).
pub fn base() -> Vec<u8> {
    let mut rng = SplitMix(0xB16_B10C);
    let mut block = vec![0u8; BASE_LEN];
    for chunk in block.chunks_exact_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    block
}

/// The offset and length of the next big value.
pub fn big_shape(rng: &mut SplitMix) -> (u64, u64) {
    let len = BIG_MIN + rng.below(BIG_MAX - BIG_MIN + 1);
    let offset = rng.below(BASE_LEN as u64 - len + 1);
    (offset, len)
}

/// Checks one received value against what the child sent as value
/// number `expected`; returns the fds it carried.
pub fn check_value(
    value: Up,
    expected: u64,
    shapes: &mut SplitMix,
    base: &[u8],
    tally: &mut Tally,
) -> Result<u64, String> {
    match value {
        Up::Small { seq, text } => {
            if seq != expected {
                return Err(format!("got value {seq}, expected {expected}"));
            }
            if text != small_text(seq) {
                return Err(format!("value {seq}: text corrupted: {text:?}"));
            }
            Ok(0)
        }
        Up::Big { seq, offset, data } => {
            if seq != expected {
                return Err(format!("got big value {seq}, expected {expected}"));
            }
            let (want_offset, want_len) = big_shape(shapes);
            if (offset, data.len() as u64) != (want_offset, want_len) {
                return Err(format!(
                    "big value {seq}: offset {offset} len {} instead of {want_offset} {want_len}",
                    data.len()
                ));
            }
            let range = offset as usize..(offset + want_len) as usize;
            if data[..] != base[range] {
                return Err(format!("big value {seq}: contents corrupted"));
            }
            tally.big_bytes += want_len;
            Ok(0)
        }
        Up::Carry { seq, pipes, nested } => {
            if seq != expected {
                return Err(format!("got carry {seq}, expected {expected}"));
            }
            let want = (seq % 3) as usize + 1;
            if pipes.len() != want {
                return Err(format!(
                    "carry {seq}: {} pipes, expected {want}",
                    pipes.len()
                ));
            }
            for (j, pipe) in pipes.into_iter().enumerate() {
                if !common::is_cloexec(pipe.as_fd()) {
                    return Err(format!("carry {seq}: pipe {j} lacks close-on-exec"));
                }
                let mut text = String::new();
                let mut reader = pipe.into_inner();
                reader
                    .read_to_string(&mut text)
                    .map_err(|e| format!("carry {seq}: read pipe {j}: {e}"))?;
                if text != pipe_text(seq, j) {
                    return Err(format!("carry {seq}: pipe {j} holds {text:?}"));
                }
            }
            if !common::is_cloexec(nested.as_fd()) {
                return Err(format!("carry {seq}: nested channel lacks close-on-exec"));
            }
            match nested.recv_timeout(BOUND) {
                Ok(n) if n == seq => {}
                other => return Err(format!("carry {seq}: nested channel gave {other:?}")),
            }
            // Its sender died with the child.
            match nested.recv_timeout(BOUND) {
                Err(RecvTimeoutError::Disconnected) => {}
                other => {
                    return Err(format!(
                        "carry {seq}: nested channel after its value: {other:?}"
                    ))
                }
            }
            Ok(want as u64 + 1)
        }
    }
}
