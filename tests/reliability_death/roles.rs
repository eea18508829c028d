//! The children that are killed (child roles): streams of small or big
//! values, values carrying fds left in flight, and handshakes answered at
//! once, late or never. Each records its confirmed sends in the progress
//! file the parent reads after the kill.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use courier::{from_env, Bytes, Fd, RecvTimeoutError};

use crate::support::child::inherited_channel_fd;
use crate::support::env::env_u64;
use crate::support::rng::SplitMix;
use crate::values::{base, big_shape, pipe_text, small_text, ChildEnd, Up, CARRIES};
use crate::{config, LIFETIME, PROGRESS_ENV, RING_OFF_ENV, SLEEP_ENV, TRIAL_SEED_ENV};

/// In a child: records in the progress file that `count` sends were
/// confirmed.
struct Progress(File);

impl Progress {
    fn open() -> Progress {
        let path = std::env::var(PROGRESS_ENV).expect("progress file");
        Progress(
            File::options()
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {path}: {e}")),
        )
    }

    fn confirmed(&self, count: u64) {
        self.0
            .write_all_at(&count.to_le_bytes(), 0)
            .expect("write progress");
    }
}

/// Sends what `next(seq)` makes until killed (or the parent goes away, or
/// [`LIFETIME`] passes), recording every confirmed send.
fn stream(ep: &ChildEnd, mut next: impl FnMut(u64) -> Up) {
    let progress = Progress::open();
    let end = Instant::now() + LIFETIME;
    let mut seq = 0;
    while Instant::now() < end {
        match ep.send_timeout(next(seq), LIFETIME) {
            Ok(()) => progress.confirmed(seq + 1),
            Err(e) if e.is_disconnected() => return,
            Err(e) => panic!("send {seq}: {e:?}"),
        }
        seq += 1;
    }
}

pub fn stream_small() {
    let ep: ChildEnd = from_env(config()).expect("from_env");
    stream(&ep, |seq| Up::Small {
        seq,
        text: small_text(seq),
    });
}

pub fn stream_large() {
    let mut config = config();
    if std::env::var_os(RING_OFF_ENV).is_some() {
        config = config.shared_ring(0);
    }
    let base = base();
    let mut rng = SplitMix(env_u64(TRIAL_SEED_ENV));
    let ep: ChildEnd = from_env(config).expect("from_env");
    stream(&ep, |seq| {
        let (offset, len) = big_shape(&mut rng);
        Up::Big {
            seq,
            offset,
            data: Bytes::from(&base[offset as usize..(offset + len) as usize]),
        }
    });
}

pub fn fds_in_flight() {
    let ep: ChildEnd = from_env(config()).expect("from_env");
    let progress = Progress::open();
    let mut keep = Vec::new();
    for seq in 0..CARRIES {
        let mut pipes = Vec::new();
        for j in 0..=(seq % 3) as usize {
            let (reader, mut writer) = std::io::pipe().expect("pipe");
            writer
                .write_all(pipe_text(seq, j).as_bytes())
                .expect("fill the pipe");
            pipes.push(Fd::new(reader));
        }
        let (tx, nested) = courier::channel::<u64>().expect("nested channel");
        tx.send(seq).expect("into the nested channel");
        keep.push(tx); // dies with this process
        match ep.send_timeout(Up::Carry { seq, pipes, nested }, LIFETIME) {
            Ok(()) => progress.confirmed(seq + 1),
            Err(e) => panic!("send {seq}: {e:?}"),
        }
    }
    std::thread::sleep(LIFETIME);
    panic!("fds_in_flight: not killed within {LIFETIME:?}");
}

/// Answers the hello at once, then waits to be killed.
pub fn quick_hello() {
    let ep: ChildEnd = from_env(config()).expect("from_env");
    match ep.recv_timeout(LIFETIME) {
        Err(RecvTimeoutError::Disconnected) => {}
        other => panic!("expected to be killed, got {:?}", other.map(|_| ())),
    }
}

/// Sleeps first (a slow start), then as [`quick_hello`].
pub fn slow_hello() {
    std::thread::sleep(Duration::from_micros(env_u64(SLEEP_ENV)));
    quick_hello();
}

/// Reads the parent's hello (raw, from the inherited fd) and never answers.
pub fn stall_hello() {
    let raw = inherited_channel_fd();
    let end = Instant::now() + LIFETIME;
    let mut buf = [0u8; 512];
    loop {
        match nix::sys::socket::recv(raw, &mut buf, nix::sys::socket::MsgFlags::MSG_DONTWAIT) {
            Ok(n) => {
                assert!(n > 0, "end of stream before the hello");
                break;
            }
            Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => panic!("recv the hello: {e}"),
        }
        assert!(Instant::now() < end, "no hello within {LIFETIME:?}");
    }
    std::thread::sleep(LIFETIME);
    panic!("stall_hello: not killed within {LIFETIME:?}");
}
