//! Memory follows the bytes that really arrive, never a claimed length.
//!
//! Alone in its binary so that no other test's allocations blur the
//! process's resident size (read from /proc/self/status).

mod util;

use std::io::{ErrorKind, Write};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use courier_transport::{FrameTransport, Wait};
use util::{after_ms, fed_transport, recv, status_kib, SOON};

const MIB: usize = 1 << 20;

/// A prefix claims 3 GiB and the maximum allows it; the peer sends 64 MiB
/// of junk, pauses, then closes. While the frame is incomplete the
/// process's resident size (and its peak) stays near what arrived, far
/// below the claim; the close is a torn frame (UnexpectedEof), then the
/// clean end.
#[test]
fn a_3_gib_claim_with_64_mib_sent_allocates_only_what_arrived() {
    let claim: u32 = 3 << 30;
    let sent = 64 * MIB;
    let (t, mut w, _out) = fed_transport();
    let baseline = status_kib("VmRSS:");
    let (done_tx, done_rx) = mpsc::channel();
    let (close_tx, close_rx) = mpsc::channel::<()>();
    let writer = thread::spawn(move || {
        w.write_all(&claim.to_le_bytes()).unwrap();
        let junk = vec![0xC3u8; MIB];
        for _ in 0..sent / MIB {
            w.write_all(&junk).unwrap();
        }
        done_tx.send(()).unwrap();
        // Keep the stream open until told (bounded).
        let _ = close_rx.recv_timeout(SOON);
        drop(w);
    });

    // Read everything the writer sends: calls time out while it pauses.
    let start = Instant::now();
    let mut writer_done = false;
    loop {
        match recv(&t, u32::MAX as usize, after_ms(50)) {
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                if writer_done {
                    break; // all 64 MiB read and nothing more coming
                }
                writer_done = done_rx.try_recv().is_ok();
            }
            other => panic!(
                "expected timeouts inside the frame, got {:?}",
                other.map(|f| f.map(|f| f.len()))
            ),
        }
        assert!(start.elapsed() < SOON, "the writer never finished");
    }
    assert!(
        util::queued(t.readable_fd()) == 0,
        "the reader left bytes in the pipe"
    );
    let rss = status_kib("VmRSS:");
    let peak = status_kib("VmHWM:");
    let grew = rss.saturating_sub(baseline);
    let peak_grew = peak.saturating_sub(baseline);
    eprintln!(
        "baseline {} MiB, now {} MiB (+{} MiB), peak {} MiB",
        baseline / MIB,
        rss / MIB,
        grew / MIB,
        peak / MIB
    );
    assert!(
        grew >= sent / 2,
        "resident size grew by only {grew} bytes: were the 64 MiB kept at all?"
    );
    assert!(
        peak_grew < 512 * MIB,
        "resident size peaked {peak_grew} bytes above the baseline for 64 MiB received \
         under a 3 GiB claim"
    );

    close_tx.send(()).unwrap();
    writer.join().unwrap();
    match recv(&t, u32::MAX as usize, Wait::Until(Instant::now() + SOON)) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}"),
        Ok(got) => panic!("expected UnexpectedEof, got {:?}", got.map(|f| f.len())),
    }
    assert_eq!(recv(&t, MIB, after_ms(5_000)).unwrap(), None);
}
