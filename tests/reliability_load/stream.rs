//! What a client streams: numbered [`Load`] messages whose payload and
//! fds are a function of `(client, seq)` alone, so that the receiver can
//! check every byte and fd; ten per client (a hundred in the long version)
//! are large, through the sender's shared ring.

use std::fs::File;
use std::io::{PipeReader, Write};

use courier::{Bytes, Fd};
use nix::sys::memfd::{memfd_create, MFdFlags};
use serde::{Deserialize, Serialize};

use crate::support::figures::scaled;

/// One message of a client's stream.
#[derive(Serialize, Deserialize)]
pub struct Load {
    /// Which client sent it (0..CLIENTS).
    pub client: u32,
    /// Its place in that client's stream, from 0.
    pub seq: u64,
    /// [`payload_len`] bytes of [`fill`].
    pub payload: Bytes,
    /// The fds [`fd_count`] says, each tagged with `(client, seq)`.
    pub attached: Vec<Attached>,
}

/// An fd riding in a message.
#[derive(Serialize, Deserialize)]
pub enum Attached {
    /// A memfd named `courier-load-c{client}-s{seq}-{i}` holding the tag.
    Memfd(Fd<File>),
    /// The read end of a pipe holding the tag (its write end closed).
    Pipe(Fd<PipeReader>),
}

/// Messages per client carrying a large payload (sizes cycle over ten).
pub fn large_per_client() -> u64 {
    scaled(10, 100)
}
/// How many different large sizes there are.
const LARGE_SIZES: usize = 10;
/// The smallest large payload: above the 64 KiB inline threshold.
pub const LARGE_MIN: usize = 100 << 10;
/// One message in this many carries an fd ...
const FD_EVERY: u64 = 64;
/// ... and one in this many carries [`MULTI_FDS`].
const MULTI_FD_EVERY: u64 = 4096;
const MULTI_FDS: usize = 4;

/// The sequence numbers carrying a large payload: ten spread over the
/// stream (all of them when it is shorter).
fn large_index(seq: u64, count: u64) -> Option<u64> {
    let every = (count / large_per_client()).max(1);
    (seq % every == every / 2).then_some(seq / every)
}

pub fn payload_len(seq: u64, count: u64) -> usize {
    match large_index(seq, count) {
        // 100 KiB, 197 KiB, ... up to about 1 MiB.
        Some(k) => LARGE_MIN + (k as usize % LARGE_SIZES) * (97 << 10),
        None => 8 + (seq % 25) as usize,
    }
}

/// Byte `i` of the payload of `(client, seq)`.
pub fn fill(client: u32, seq: u64, i: usize) -> u8 {
    (u64::from(client) * 131 + seq * 7 + i as u64 * 13 + (i as u64 >> 8)) as u8
}

pub fn fd_count(seq: u64) -> usize {
    if seq % MULTI_FD_EVERY == MULTI_FD_EVERY - 1 {
        MULTI_FDS
    } else if seq % FD_EVERY == FD_EVERY - 1 {
        1
    } else {
        0
    }
}

/// What fd `i` of `(client, seq)` holds.
pub fn tag(client: u32, seq: u64, i: usize) -> String {
    format!("courier-load-c{client}-s{seq}-{i}")
}

/// The `i`th fd of `(client, seq)`: memfds and pipes in turn.
fn attach(client: u32, seq: u64, i: usize) -> Attached {
    let tag = tag(client, seq, i);
    if (seq / FD_EVERY + i as u64).is_multiple_of(2) {
        let fd = memfd_create(tag.as_str(), MFdFlags::MFD_CLOEXEC).expect("memfd_create");
        let mut file = File::from(fd);
        file.write_all(tag.as_bytes()).expect("write memfd");
        Attached::Memfd(Fd::new(file))
    } else {
        let (reader, mut writer) = std::io::pipe().expect("pipe");
        writer.write_all(tag.as_bytes()).expect("write pipe");
        Attached::Pipe(Fd::new(reader))
    }
}

pub fn message(client: u32, seq: u64, count: u64) -> Load {
    let len = payload_len(seq, count);
    Load {
        client,
        seq,
        payload: Bytes::from((0..len).map(|i| fill(client, seq, i)).collect::<Vec<u8>>()),
        attached: (0..fd_count(seq)).map(|i| attach(client, seq, i)).collect(),
    }
}
