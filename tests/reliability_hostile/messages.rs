//! What travels: the values the attacked receiver decodes ([`Wire`],
//! with the valid [`Probe`]s a real sender mixes in) and the listener's
//! requests and replies, and the hand-made bodies of their shapes.

use std::fs::File;
use std::io::PipeReader;

use courier::transport::SeqPacketSocket;
use courier::{Bytes, Fd};
use serde::{Deserialize, Serialize};

use crate::support::rng::{Random, XorShiftStar};
use crate::support::wire::Enc;

/// What the attacked receiver decodes frames as. The hostile side encodes
/// bodies of this shape by hand (see [`Enc`]): variant indices matter.
#[derive(Serialize, Deserialize, Debug)]
pub enum Wire {
    /// 0: a valid value from the real sender.
    Probe(Probe),
    /// 1
    Number(u64),
    /// 2
    Text(String),
    /// 3: refuses any fd that is not a pipe.
    Pipes(Vec<Fd<PipeReader>>),
    /// 4: refuses any fd that is not a SEQPACKET socket.
    Socket(Fd<SeqPacketSocket>),
    /// 5: takes fds of any kind.
    Any(Vec<Fd>),
    /// 6
    Pair { a: Option<Fd<File>>, b: Vec<u16> },
    /// 7: recursive, for depth bombs.
    Nested(Option<Box<Wire>>),
}

pub const V_NUMBER: u64 = 1;
pub const V_TEXT: u64 = 2;
pub const V_PIPES: u64 = 3;
pub const V_SOCKET: u64 = 4;
pub const V_ANY: u64 = 5;
pub const V_PAIR: u64 = 6;
pub const V_NESTED: u64 = 7;

/// A valid value whose bytes the receiver can check.
#[derive(Serialize, Deserialize, Debug)]
pub struct Probe {
    pub seq: u64,
    pub check: u64,
    pub data: Bytes,
    /// `/dev/null` for every probe with `seq % 4 == 1`.
    pub file: Option<Fd<File>>,
}

pub fn probe_data(seq: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (seq.wrapping_mul(131) ^ i.wrapping_mul(7) ^ (i >> 8)) as u8)
        .collect()
}

/// FNV-1a of the sequence number, the length and the data.
pub fn probe_check(seq: u64, data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let len = data.len() as u64;
    for b in seq
        .to_le_bytes()
        .iter()
        .chain(&len.to_le_bytes())
        .chain(data)
    {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What the listener's endpoints receive.
#[derive(Serialize, Deserialize, Debug)]
pub enum Ask {
    Ping(u64),
    Finish(u64),
    Text(String),
    Pipes(Vec<Fd<PipeReader>>),
    Any(Vec<Fd>),
}

/// What the listener's endpoints answer.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub enum Reply {
    Pong(u64),
}

/// A body of `Wire::Number(x)`.
pub fn number_body(x: u64) -> Vec<u8> {
    Enc::default().var(V_NUMBER).var(x).done()
}

/// A body of `Wire::Text` holding `text` (which need not be UTF-8).
pub fn text_body(text: &[u8]) -> Vec<u8> {
    Enc::default()
        .var(V_TEXT)
        .var(text.len() as u64)
        .raw(text)
        .done()
}

/// A small valid body without fds: a number or a short text.
pub fn plain_body(rng: &mut XorShiftStar, max_text: usize) -> Vec<u8> {
    if rng.chance(1, 2) {
        number_body(rng.next())
    } else {
        let len = rng.index(max_text + 1);
        text_body(&vec![b'a' + (rng.below(26) as u8); len])
    }
}
