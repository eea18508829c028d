//! Frames far larger than PIPE_BUF from many threads through one shared
//! transport never interleave: every frame arrives whole, and each
//! thread's frames arrive in the order it sent them.

mod util;

use std::sync::Barrier;
use std::thread;

use courier_channel::{Bytes, Config, Endpoint};
use courier_pipe::pair;
use courier_transport::Wait;
use util::{recv_soon, send};

const THREADS: u64 = 8;
const PER_THREAD: u64 = 200;
const MIN: usize = 64 << 10;
const MAX: usize = 300 << 10;

/// A frame's length from (thread, seq), spread over 64 KiB..300 KiB and
/// mostly not a multiple of anything.
fn len_of(thread: u64, seq: u64) -> usize {
    MIN + ((thread * 7919 + seq * 104_729) as usize * 31) % (MAX - MIN + 1)
}

/// The frame of (thread, seq): blocks of 1000 bytes (not aligned to pages,
/// so any page-sized piece holds a stamp), each a 24-byte stamp naming
/// (thread, seq, block) and then a fill byte derived from them, so any
/// piece from another frame or another place is noticed.
fn frame_of(thread: u64, seq: u64) -> Vec<u8> {
    const BLOCK: usize = 1000;
    let len = len_of(thread, seq);
    let mut out = Vec::with_capacity(len + BLOCK);
    let mut block = 0u64;
    while out.len() < len {
        out.extend_from_slice(&thread.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&block.to_le_bytes());
        let fill =
            ((thread << 40 ^ seq << 20 ^ block).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8;
        // vec![byte; n] is a memset even unoptimised (resize is not).
        out.extend_from_slice(&vec![fill; BLOCK - 24]);
        block += 1;
    }
    out.truncate(len);
    out
}

fn id_of(frame: &[u8]) -> (u64, u64) {
    assert!(frame.len() >= 16, "a frame of {} bytes", frame.len());
    (
        u64::from_le_bytes(frame[..8].try_into().unwrap()),
        u64::from_le_bytes(frame[8..16].try_into().unwrap()),
    )
}

#[test]
fn eight_threads_of_large_frames_never_interleave() {
    let (a, b) = pair().unwrap();
    let start = Barrier::new(THREADS as usize);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (a, start) = (&a, &start);
            s.spawn(move || {
                // Built ahead, so the threads really write at once.
                let frames: Vec<Vec<u8>> = (0..PER_THREAD).map(|q| frame_of(t, q)).collect();
                start.wait();
                for f in &frames {
                    send(a, f, Wait::Block).unwrap();
                }
            });
        }
        let mut next = [0u64; THREADS as usize];
        for n in 0..THREADS * PER_THREAD {
            let got = recv_soon(&b, MAX);
            let (t, q) = id_of(&got);
            assert!(t < THREADS, "frame {n}: header names thread {t}");
            assert_eq!(q, next[t as usize], "frame {n}: thread {t} out of order");
            next[t as usize] += 1;
            assert_eq!(got.len(), len_of(t, q), "frame {n} ({t}, {q}): length");
            assert!(
                got == frame_of(t, q),
                "frame {n} ({t}, {q}): contents mixed"
            );
        }
        assert_eq!(next, [PER_THREAD; THREADS as usize]);
    });
    assert!(
        util::recv(&b, MAX, Wait::Never).unwrap_err().kind() == std::io::ErrorKind::WouldBlock,
        "more frames than were sent"
    );
}

/// The same through a typed sender cloned into several threads (values
/// above PIPE_BUF; each is one frame).
#[test]
fn typed_senders_in_four_threads_never_interleave() {
    let (a, b) = pair().unwrap();
    let tx = Endpoint::<(u64, u64, Bytes), ()>::with_transport(Box::new(a), Config::new());
    let rx = Endpoint::<(), (u64, u64, Bytes)>::with_transport(Box::new(b), Config::new());
    let (tx, _tx_rx) = tx.split();
    let per_thread = 50;
    thread::scope(|s| {
        for t in 0..4u64 {
            let tx = tx.clone();
            s.spawn(move || {
                for q in 0..per_thread {
                    tx.send((t, q, Bytes(frame_of(t, q)))).unwrap();
                }
            });
        }
        let mut next = [0u64; 4];
        for _ in 0..4 * per_thread {
            let (t, q, bytes) = rx.recv_timeout(util::SOON).unwrap();
            assert_eq!(q, next[t as usize], "thread {t} out of order");
            next[t as usize] += 1;
            assert!(bytes.0 == frame_of(t, q), "({t}, {q}): contents mixed");
        }
    });
}
