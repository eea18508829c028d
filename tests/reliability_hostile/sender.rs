//! The hostile sender: raw frames and, every [`PROBE_EVERY`] frames, a
//! valid value from a real courier sender, on one connection to the
//! receiver; on a second connection the lock step that tells the receiver
//! how many frames to read and what each should produce.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};

use courier::transport::SeqPacketSocket;
use courier::{Bytes, Config, Fd, Sender};

use crate::categories::{cat_name, Cat, Expect, CATS};
use crate::common;
use crate::frames::{After, Hostile};
use crate::messages::{probe_check, probe_data, Probe, Wire};
use crate::pool::FdRef;
use crate::settings::{
    seed, BATCH_BYTES, BATCH_FDS, BATCH_FRAMES, FRAMES_ENV, FRAME_WAIT, LIMIT, PROBE_EVERY,
    STEP_WAIT,
};
use crate::support::env::env_u64;
use crate::support::rng::{Random, XorShiftStar};
use crate::support::say;
use crate::support::wire::send_frame;

/// The frames sent since the receiver last read, and what to do before it
/// does.
#[derive(Default)]
struct Batch {
    entries: Vec<(u8, u8)>,
    after: Vec<After>,
    own: Vec<File>,
    bytes: usize,
    fds: usize,
}

impl Batch {
    fn room_for(&self, bytes: usize, fds: usize) -> bool {
        self.entries.is_empty()
            || (self.entries.len() < BATCH_FRAMES
                && self.bytes + bytes <= BATCH_BYTES
                && self.fds + fds <= BATCH_FDS)
    }
}

/// The hostile sender's lock step with the receiver.
struct Stepper {
    control: SeqPacketSocket,
    batches: u64,
    notes: BTreeMap<&'static str, u64>,
}

impl Stepper {
    /// Does the after-send mischief, tells the receiver what the batch
    /// holds, and waits until it has read it all.
    fn flush(&mut self, batch: &mut Batch, hostile: &mut Hostile) {
        if batch.entries.is_empty() {
            return;
        }
        for after in batch.after.drain(..) {
            if let Some(note) = after() {
                *self.notes.entry(note).or_default() += 1;
            }
        }
        let mut msg = vec![b'B'];
        msg.extend_from_slice(&(batch.entries.len() as u16).to_le_bytes());
        for &(cat, expect) in &batch.entries {
            msg.extend_from_slice(&[cat, expect]);
        }
        self.control
            .send_timeout(&msg, STEP_WAIT)
            .expect("send a batch notice");
        let mut ack = [0u8; 8];
        let n = self
            .control
            .recv_timeout(&mut ack, STEP_WAIT)
            .expect("the receiver's ack (it hung or died)");
        assert_eq!(&ack[..n], b"A", "the receiver's ack");
        self.batches += 1;
        *batch = Batch::default();
        hostile.rings_in_batch.iter_mut().for_each(|u| *u = false);
    }
}

/// The hostile sender: raw frames, and probes from real courier senders,
/// on one connection to the receiver; lock step on another.
pub fn role_sender() {
    let seed = seed();
    let frames = env_u64(FRAMES_ENV);
    let addr = common::parent_addr();
    let data = SeqPacketSocket::connect_timeout(&addr, STEP_WAIT).expect("connect (data)");
    let control = SeqPacketSocket::connect_timeout(&addr, STEP_WAIT).expect("connect (control)");
    let config = Config::new().limit(LIMIT);
    // One sender through its ring, one through a memfd per value: both
    // kept until the end (dropping a sender shuts the socket's writing).
    let ring_tx = Sender::<Wire>::from_socket(data.try_clone().expect("dup"), config);
    let shm_tx = Sender::<Wire>::from_socket(data.try_clone().expect("dup"), config.shared_ring(0));
    let mut hostile = Hostile::new(seed);
    let mut probe_rng = XorShiftStar::new(seed ^ 0x0050_524f_4245);
    let mut stepper = Stepper {
        control,
        batches: 0,
        notes: BTreeMap::new(),
    };
    let mut batch = Batch::default();
    let mut sent = [0u64; CATS.len()];
    let mut fds_sent = 0u64;
    let mut probe_seq = 0u64;
    for i in 0..frames {
        if i % PROBE_EVERY == 0 {
            if !batch.room_for(4096, 1) {
                stepper.flush(&mut batch, &mut hostile);
            }
            let seq = probe_seq;
            let len = match seq % 4 {
                0 | 1 => probe_rng.index(512),
                _ => 100_000 + probe_rng.index(200_000),
            };
            let data = probe_data(seq, len);
            let file = (seq % 4 == 1).then(|| Fd::new(File::open("/dev/null").expect("/dev/null")));
            let probe = Wire::Probe(Probe {
                seq,
                check: probe_check(seq, &data),
                data: Bytes::from(data),
                file,
            });
            let tx = if seq % 4 == 3 { &shm_tx } else { &ring_tx };
            tx.send_timeout(probe, FRAME_WAIT)
                .unwrap_or_else(|e| panic!("probe {seq}: {e:?} (seed {seed:#x})"));
            batch.entries.push((Cat::Probe as u8, Expect::Probe as u8));
            batch.bytes += 1024;
            batch.fds += 2;
            sent[Cat::Probe as usize] += 1;
            probe_seq += 1;
        }
        let cat = hostile.pick();
        let built = hostile.build(cat);
        if !batch.room_for(built.bytes.len() + 512, built.fds.len()) {
            stepper.flush(&mut batch, &mut hostile);
        }
        let fds: Vec<BorrowedFd<'_>> = built
            .fds
            .iter()
            .map(|&r| match r {
                FdRef::Own(j) => built.own[j].as_fd(),
                other => hostile.fd(other),
            })
            .collect();
        send_frame(&data, &built.bytes, &fds, FRAME_WAIT).unwrap_or_else(|e| {
            panic!(
                "frame {i} ({}): send failed: {e} (seed {seed:#x})",
                cat_name(built.cat as u8)
            )
        });
        fds_sent += fds.len() as u64;
        drop(fds);
        if let Some(k) = built.uses_ring {
            hostile.rings_in_batch[k] = true;
        }
        batch.entries.push((built.cat as u8, built.expect as u8));
        batch.bytes += built.bytes.len() + 512;
        batch.fds += built.fds.len();
        batch.after.extend(built.after);
        batch.own.extend(built.own);
        sent[built.cat as usize] += 1;
    }
    stepper.flush(&mut batch, &mut hostile);
    drop((ring_tx, shm_tx, data));
    stepper
        .control
        .send_timeout(b"E", STEP_WAIT)
        .expect("send the end notice");
    let mut line = format!(
        "sent: frames={frames} batches={} fds={fds_sent}",
        stepper.batches
    );
    for (cat, name, _) in CATS {
        line.push_str(&format!(" {name}={}", sent[cat as usize]));
    }
    for (note, count) in &stepper.notes {
        line.push_str(&format!(" {note}={count}"));
    }
    say(&line);
}
