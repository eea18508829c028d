//! Hostile frames from a raw transport peer to a typed `Receiver`: random
//! bytes, short, empty and lying headers, limits, fd counts and indices that
//! do not add up, shared-memory bodies in fds that are not properly sealed
//! memfds, trailing bytes and postcard garbage. Each must give a typed
//! `Failed` error (never a panic), close every fd the frame brought, and
//! leave the channel usable for the next valid value.

mod common;

use std::fs::File;
use std::io::PipeReader;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;

use common::{
    body_of, devnull, expect_failure, expect_frame_error, inline_frame, plain_body, raw_peer,
    sealed_memfd, send_empty, send_raw, still_usable, with_fd_baseline, Fuzzed, Plain, RawHeader,
    Shape, RECV_TIMEOUT,
};
use courier_channel::{ChannelError, Config, Fd, FrameError, Receiver, RecvTimeoutError, Sender};
use courier_transport::SeqPacketSocket;
use nix::fcntl::SealFlag;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
struct OneFd {
    tag: u32,
    file: Fd<File>,
}

#[derive(Serialize, Deserialize, Debug)]
struct TwoFds {
    a: Fd<File>,
    b: Fd<File>,
}

#[derive(Serialize, Deserialize, Debug)]
struct WantsPipe {
    pipe: Fd<PipeReader>,
}

/// A valid [`OneFd`] sent through a real sender after bad frames still arrives.
fn still_usable_fd(peer: &SeqPacketSocket, rx: &Receiver<OneFd>) {
    let tx = Sender::<OneFd>::from_socket(peer.try_clone().expect("dup peer"), Config::new());
    let file = Fd::new(devnull());
    tx.send(OneFd { tag: 9, file }).expect("send valid value");
    let got = rx
        .recv_timeout(RECV_TIMEOUT)
        .expect("a valid frame after the bad one was refused");
    assert_eq!(got.tag, 9, "the valid value after the bad frame changed");
    let kind = got.file.metadata().expect("fstat received fd").file_type();
    assert!(kind.is_char_device(), "received fd is not /dev/null");
}

#[test]
fn random_frames_give_values_or_typed_errors_and_leak_no_fd() {
    const SEED: u64 = 0x00c0_ffee_1234_5678;
    with_fd_baseline("random frames", || {
        let (peer, rx) = raw_peer::<Fuzzed>(Config::new());
        let mut rng = common::XorShift(SEED);
        let (pipe_r, pipe_w) = std::io::pipe().expect("pipe");
        let shared_body = body_of(&Shape::Text("in shared memory".into()));
        let shared_len = shared_body.len() as u64;
        let memfd = sealed_memfd(&shared_body);
        let pool: [BorrowedFd<'_>; 4] =
            [pipe_r.as_fd(), pipe_w.as_fd(), memfd.as_fd(), peer.as_fd()];
        let dev = devnull();
        let before = common::fd_table();
        let (mut ok, mut frame_errors, mut decode_errors, mut refused) = (0, 0, 0, 0);
        for i in 0..2_000 {
            let mut fds: Vec<BorrowedFd<'_>> = (0..rng.below(4))
                .map(|_| pool[rng.below(4) as usize])
                .collect();
            let (frame, shared) = common::random_frame(&mut rng, fds.len() as u16, shared_len);
            if shared {
                // The sealed memfd, or sometimes another fd, comes last.
                let body_fds = [dev.as_fd(), memfd.as_fd(), memfd.as_fd(), memfd.as_fd()];
                fds.push(body_fds[rng.below(4) as usize]);
            }
            if frame.is_empty() {
                send_empty(&peer, &fds);
            } else {
                send_raw(&peer, &frame, &fds);
            }
            match rx.recv_timeout(RECV_TIMEOUT) {
                Ok(_value) => ok += 1, // dropped at once, closing its fds
                Err(RecvTimeoutError::Failed(ChannelError::Frame(_))) => frame_errors += 1,
                Err(RecvTimeoutError::Failed(ChannelError::Decode(_))) => decode_errors += 1,
                Err(RecvTimeoutError::Failed(ChannelError::Refused(_))) => refused += 1,
                Err(e) => panic!("frame {i} (seed {SEED:#x}): untyped failure {e:?}"),
            }
        }
        assert!(
            ok > 0 && frame_errors > 0 && decode_errors > 0 && refused > 0,
            "the fuzz missed an outcome \
             (ok {ok}, frame {frame_errors}, decode {decode_errors}, refused {refused})"
        );
        common::assert_fds_back(&before, "fds of 2,000 random frames");
        send_raw(&peer, &inline_frame(0, &body_of(&Fuzzed::Number(5))), &[]);
        match rx.recv_timeout(RECV_TIMEOUT) {
            Ok(Fuzzed::Number(5)) => {}
            other => panic!("valid value after the random frames: got {other:?}"),
        }
    });
}

#[test]
fn an_empty_frame_is_too_short() {
    with_fd_baseline("empty frame", || {
        let (peer, rx) = raw_peer::<Plain>(Config::new());
        let e = expect_frame_error(&rx, "empty frame", || send_empty(&peer, &[]));
        assert_eq!(e, FrameError::TooShort { len: 0 });
        let dev = devnull();
        let e = expect_frame_error(&rx, "empty frame with an fd", || {
            send_empty(&peer, &[dev.as_fd()])
        });
        assert_eq!(e, FrameError::TooShort { len: 0 });
        still_usable(&peer, &rx);
    });
}

#[test]
fn a_header_shorter_than_16_bytes_is_too_short() {
    with_fd_baseline("short header", || {
        let (peer, rx) = raw_peer::<Plain>(Config::new());
        let header = RawHeader::inline(0, 0).bytes();
        for len in 1..16 {
            let e = expect_frame_error(&rx, &format!("{len}-byte header"), || {
                send_raw(&peer, &header[..len], &[])
            });
            assert_eq!(e, FrameError::TooShort { len });
        }
        still_usable(&peer, &rx);
    });
}

/// Sends valid frames of `Plain` with one header field changed by `spoil`.
fn spoiled_header(what: &str, spoil: impl Fn(&mut RawHeader), expected: FrameError) {
    with_fd_baseline(what, || {
        let (peer, rx) = raw_peer::<Plain>(Config::new());
        let body = plain_body();
        let mut header = RawHeader::inline(0, body.len() as u64);
        spoil(&mut header);
        let e = expect_frame_error(&rx, what, || send_raw(&peer, &header.frame(&body), &[]));
        assert_eq!(e, expected, "{what}");
        still_usable(&peer, &rx);
    });
}

#[test]
fn wrong_magic_is_refused() {
    for found in [*b"XR", *b"CQ", [0, 0], *b"RC"] {
        spoiled_header("magic", |h| h.magic = found, FrameError::BadMagic { found });
    }
}

#[test]
fn wrong_version_is_refused() {
    for found in [0, 1, courier_channel::WIRE_VERSION + 1, 255] {
        let expected = FrameError::UnsupportedVersion {
            found,
            supported: courier_channel::WIRE_VERSION,
        };
        spoiled_header("version", |h| h.version = found, expected);
    }
}

#[test]
fn unknown_kind_is_refused() {
    for found in [3, 4, 128, 255] {
        spoiled_header(
            "kind",
            |h| h.kind = found,
            FrameError::UnknownKind { found },
        );
    }
}

#[test]
fn reserved_bits_set_are_refused() {
    for bits in [[1, 0], [0, 1], [0x80, 0], [0, 0x80], [0xff, 0xff]] {
        spoiled_header(
            "reserved",
            |h| h.reserved = bits,
            FrameError::ReservedBitsSet,
        );
    }
}

#[test]
fn a_lying_body_len_is_refused() {
    let actual = plain_body().len() as u64;
    for declared in [actual + 1, actual + 1000, 0, actual - 1] {
        let expected = FrameError::BodyLengthMismatch { declared, actual };
        spoiled_header("lying body_len", |h| h.body_len = declared, expected);
    }
    with_fd_baseline("inline bytes after a shared-memory header", || {
        let (peer, rx) = raw_peer::<Plain>(Config::new());
        let body = plain_body();
        let memfd = sealed_memfd(&body);
        let frame = RawHeader::shared(0, body.len() as u64).frame(b"extra");
        let e = expect_frame_error(&rx, "shared-memory frame with inline bytes", || {
            send_raw(&peer, &frame, &[memfd.as_fd()])
        });
        let expected = FrameError::BodyLengthMismatch {
            declared: 0,
            actual: 5,
        };
        assert_eq!(e, expected);
        still_usable(&peer, &rx);
    });
}

#[test]
fn a_body_above_the_receivers_limit_is_refused_inline_and_shared() {
    with_fd_baseline("body above the limit", || {
        let (peer, rx) = raw_peer::<Plain>(Config::new().limit(1000));
        let body = body_of(&Plain {
            id: 1,
            name: "x".repeat(1200),
        });
        let size = body.len() as u64;
        let e = expect_frame_error(&rx, "inline body above the limit", || {
            send_raw(&peer, &inline_frame(0, &body), &[])
        });
        assert_eq!(e, FrameError::TooLarge { size, limit: 1000 });
        let memfd = sealed_memfd(&body);
        for size in [size, 1001, u64::MAX] {
            let frame = RawHeader::shared(0, size).bytes();
            let e = expect_frame_error(&rx, "shared body above the limit", || {
                send_raw(&peer, &frame, &[memfd.as_fd()])
            });
            assert_eq!(e, FrameError::TooLarge { size, limit: 1000 });
        }
        still_usable(&peer, &rx);
    });
}

#[test]
fn a_declared_fd_count_that_does_not_match_is_refused() {
    with_fd_baseline("fd count mismatch", || {
        let (peer, rx) = raw_peer::<Plain>(Config::new());
        let body = plain_body();
        let (a, b) = (devnull(), devnull());
        for (declared, sent) in [(2u16, 1usize), (3, 0), (0, 2), (1, 2)] {
            let fds = [a.as_fd(), b.as_fd()];
            let e = expect_frame_error(&rx, &format!("{declared} declared, {sent} sent"), || {
                send_raw(&peer, &inline_frame(declared, &body), &fds[..sent])
            });
            let expected = FrameError::FdCountMismatch {
                declared: declared.into(),
                received: sent,
            };
            assert_eq!(e, expected);
        }
        let e = expect_frame_error(&rx, "shared-memory frame without its memfd", || {
            send_raw(&peer, &RawHeader::shared(0, body.len() as u64).bytes(), &[])
        });
        assert_eq!(
            e,
            FrameError::FdCountMismatch {
                declared: 1,
                received: 0
            }
        );
        still_usable(&peer, &rx);
    });
}

#[test]
fn an_fd_index_out_of_range_is_refused() {
    with_fd_baseline("fd index out of range", || {
        let (peer, rx) = raw_peer::<OneFd>(Config::new());
        let file = devnull();
        // OneFd { tag: 3, file: index 5 }: two one-byte varints.
        let e = expect_frame_error(&rx, "index 5 of 1", || {
            send_raw(&peer, &inline_frame(1, &[3, 5]), &[file.as_fd()])
        });
        assert_eq!(e, FrameError::FdIndexOutOfRange { index: 5, count: 1 });
        still_usable_fd(&peer, &rx);
    });
}

#[test]
fn an_fd_index_used_twice_is_refused() {
    with_fd_baseline("fd index reused", || {
        let (peer, rx) = raw_peer::<TwoFds>(Config::new());
        let file = devnull();
        let e = expect_frame_error(&rx, "both fields at index 0", || {
            send_raw(&peer, &inline_frame(1, &[0, 0]), &[file.as_fd()])
        });
        assert_eq!(e, FrameError::FdIndexReused { index: 0 });
        let tx = Sender::<TwoFds>::from_socket(peer.try_clone().expect("dup"), Config::new());
        let (a, b) = (Fd::new(devnull()), Fd::new(devnull()));
        tx.send(TwoFds { a, b }).expect("send a valid TwoFds");
        let got = rx
            .recv_timeout(RECV_TIMEOUT)
            .expect("valid TwoFds after the bad frame");
        assert!(
            got.a.metadata().is_ok() && got.b.metadata().is_ok(),
            "fds do not work"
        );
    });
}

#[test]
fn fds_a_value_does_not_use_are_refused_and_closed() {
    with_fd_baseline("fds left over", || {
        let (peer, rx) = raw_peer::<OneFd>(Config::new());
        let file = devnull();
        let fds = vec![file.as_fd(); courier_transport::MAX_FDS];
        assert_eq!(fds.len(), 253);
        let e = expect_frame_error(&rx, "253 fds for a value with one", || {
            send_raw(&peer, &inline_frame(253, &[3, 0]), &fds)
        });
        assert_eq!(e, FrameError::FdsLeftOver { count: 252 });
        still_usable_fd(&peer, &rx);
    });
    with_fd_baseline("fd for a value without fd fields", || {
        let (peer, rx) = raw_peer::<Plain>(Config::new());
        let file = devnull();
        let e = expect_frame_error(&rx, "1 fd for a value with none", || {
            send_raw(&peer, &inline_frame(1, &plain_body()), &[file.as_fd()])
        });
        assert_eq!(e, FrameError::FdsLeftOver { count: 1 });
        still_usable(&peer, &rx);
    });
}

/// Sends a valid `Plain` body in `fd` as a shared-memory frame and expects
/// `BadSharedMemory` mentioning `reason`.
fn bad_shared_memory(what: &str, fd: BorrowedFd<'_>, body_len: u64, reason: &str) {
    let (peer, rx) = raw_peer::<Plain>(Config::new());
    let e = expect_frame_error(&rx, what, || {
        send_raw(&peer, &RawHeader::shared(0, body_len).bytes(), &[fd])
    });
    match e {
        FrameError::BadSharedMemory { reason: r } => {
            assert!(r.contains(reason), "{what}: reason {r:?} lacks {reason:?}")
        }
        other => panic!("{what}: expected BadSharedMemory, got {other:?}"),
    }
    still_usable(&peer, &rx);
}

#[test]
fn a_memfd_that_is_not_sealed_against_writing_is_refused() {
    with_fd_baseline("memfd not sealed", || {
        let body = plain_body();
        let len = body.len() as u64;
        let unsealed = common::memfd(&body, SealFlag::empty());
        bad_shared_memory("unsealed memfd", unsealed.as_fd(), len, "sealed");
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        let writable = common::memfd(&body, seals);
        bad_shared_memory(
            "memfd sealed against shrink+grow only",
            writable.as_fd(),
            len,
            "sealed",
        );
    });
}

#[test]
fn a_body_fd_that_is_not_a_memfd_is_refused() {
    with_fd_baseline("not a memfd", || {
        let len = plain_body().len() as u64;
        let (reader, writer) = std::io::pipe().expect("pipe");
        bad_shared_memory("pipe as body", reader.as_fd(), len, "memfd");
        bad_shared_memory("pipe writer as body", writer.as_fd(), len, "memfd");
        bad_shared_memory("/dev/null as body", devnull().as_fd(), len, "memfd");
        let tmp = tempfile::tempfile().expect("temp file");
        bad_shared_memory("regular file as body", tmp.as_fd(), len, "memfd");
    });
}

#[test]
fn a_memfd_smaller_than_the_body_is_refused() {
    with_fd_baseline("memfd too small", || {
        let body = plain_body();
        let memfd = sealed_memfd(&body);
        let len = body.len() as u64;
        bad_shared_memory("memfd 1 byte short", memfd.as_fd(), len + 1, "smaller");
        bad_shared_memory("memfd far too small", memfd.as_fd(), 1 << 16, "smaller");
    });
}

#[test]
fn bytes_after_the_value_are_refused() {
    with_fd_baseline("trailing bytes", || {
        let (peer, rx) = raw_peer::<Plain>(Config::new());
        let mut body = plain_body();
        body.extend_from_slice(&[0, 1, 2]);
        let e = expect_frame_error(&rx, "3 bytes after the value, inline", || {
            send_raw(&peer, &inline_frame(0, &body), &[])
        });
        assert_eq!(e, FrameError::TrailingBytes { count: 3 });
        let memfd = sealed_memfd(&body);
        let e = expect_frame_error(&rx, "3 bytes after the value, shared", || {
            send_raw(
                &peer,
                &RawHeader::shared(0, body.len() as u64).bytes(),
                &[memfd.as_fd()],
            )
        });
        assert_eq!(e, FrameError::TrailingBytes { count: 3 });
        still_usable(&peer, &rx);
    });
}

#[test]
fn postcard_garbage_is_a_decode_error() {
    with_fd_baseline("postcard garbage", || {
        let (peer, rx) = raw_peer::<Plain>(Config::new());
        let garbage: [&[u8]; 5] = [
            &[1, 3, 0xff, 0xfe, 0xfd],             // name not UTF-8
            &[1, 10, b'a'],                        // name cut short
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], // id overflows a u32
            &[1],                                  // no name at all
            &[0x80],                               // unfinished varint
        ];
        for body in garbage {
            let error = expect_failure(&rx, &format!("garbage {body:02x?}"), || {
                send_raw(&peer, &inline_frame(0, body), &[])
            });
            assert!(
                matches!(error, ChannelError::Decode(_)),
                "garbage {body:02x?}: expected Decode, got {error:?}"
            );
        }
        still_usable(&peer, &rx);
    });
}

#[test]
fn an_fd_of_the_wrong_kind_is_refused_and_closed() {
    with_fd_baseline("wrong fd kind", || {
        let (peer, rx) = raw_peer::<WantsPipe>(Config::new());
        let file = devnull();
        let error = expect_failure(&rx, "/dev/null for a pipe field", || {
            send_raw(&peer, &inline_frame(1, &[0]), &[file.as_fd()])
        });
        assert!(
            matches!(error, ChannelError::Refused(_)),
            "expected Refused, got {error:?}"
        );
        let (reader, _writer) = std::io::pipe().expect("pipe");
        send_raw(&peer, &inline_frame(1, &[0]), &[reader.as_fd()]);
        rx.recv_timeout(RECV_TIMEOUT)
            .expect("a pipe after the refused fd");
    });
}

/// A transport of the user's that fails a receive after putting an fd in
/// the vector (the trait only promises the vector is cut back on
/// truncation), then delivers frames from a socket.
struct LeavesAnFdBehind {
    inner: SeqPacketSocket,
    failed_once: std::sync::atomic::AtomicBool,
}

impl courier_transport::FrameTransport for LeavesAnFdBehind {
    fn supports_fds(&self) -> bool {
        true
    }

    fn max_frame_len(&self) -> std::io::Result<usize> {
        courier_transport::FrameTransport::max_frame_len(&self.inner)
    }

    fn send_frame(
        &self,
        frame: &[std::io::IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        wait: courier_transport::Wait,
    ) -> std::io::Result<()> {
        courier_transport::FrameTransport::send_frame(&self.inner, frame, fds, wait)
    }

    fn recv_frame(
        &self,
        buf: &mut Vec<u8>,
        max_len: usize,
        fds: &mut Vec<std::os::fd::OwnedFd>,
        max_fds: usize,
        wait: courier_transport::Wait,
    ) -> std::io::Result<Option<usize>> {
        use std::sync::atomic::Ordering;
        if !self.failed_once.swap(true, Ordering::Relaxed) {
            fds.push(devnull().into());
            return Err(std::io::Error::other("a transport's own failure"));
        }
        courier_transport::FrameTransport::recv_frame(&self.inner, buf, max_len, fds, max_fds, wait)
    }

    fn readable_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }

    fn writable_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

#[test]
fn fds_a_failed_receive_left_behind_do_not_join_the_next_frame() {
    with_fd_baseline("a transport that leaves an fd behind", || {
        let (peer, sock) = SeqPacketSocket::pair().expect("socketpair");
        let transport = LeavesAnFdBehind {
            inner: sock,
            failed_once: false.into(),
        };
        let rx: Receiver<u64> = Receiver::with_transport(Box::new(transport), Config::new());
        let tx: Sender<u64> = Sender::from_socket(peer, Config::new());
        tx.send(7).expect("send");
        assert!(
            matches!(
                rx.recv(),
                Err(courier_channel::RecvError::Failed(ChannelError::Io(_)))
            ),
            "the transport's failure is reported"
        );
        // Without the fd left behind, the frame declares no fds and has none.
        assert_eq!(rx.recv().expect("the next frame"), 7);
        drop(rx);
    });
}
