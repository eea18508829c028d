//! Allocation bounded by the limit: a child receiver with a 1 MiB limit
//! is sent frames claiming terabytes inline, 1 GiB bodies in sparse
//! memfds, 1 GiB and 64 MiB rings, postcard lengths of 2^40..2^60
//! elements, a sparse 64 MiB ring walked by values within the limit, and
//! over a pipe length prefixes of 3 MiB and 4 GiB. Every hostile frame
//! gives exactly the expected typed error, the honest values arrive, and
//! the child's peak memory grows by at most [`MEMORY_BOUND_KIB`].

use std::fs::File;
use std::io::{PipeReader, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use courier::channel::HEADER_LEN;
use courier::pipe::PipeTransport;
use courier::{Bytes, ChannelError, Config, Fd, Receiver, RecvTimeoutError, Sender};
use nix::fcntl::SealFlag;
use serde::{Deserialize, Serialize};

use crate::common::{self, ADDR_ENV, CHILD_TIMEOUT};
use crate::spawn_role;
use crate::support::child::finish_result;
use crate::support::figures::{status_kib, Figures};
use crate::support::memfd::{body_seals, memfd, ring_file};
use crate::support::report::variant_name;
use crate::support::say;
use crate::support::wire::{header, ring_frame, send_frame, Enc, RING_CONTROL};

/// The receiver's limit in the memory test.
const LIMIT: usize = 1 << 20;
/// How much the receiving child's peak resident memory may grow over the
/// whole memory test: a few times the limit (a value at the limit is
/// decoded once into the receiver's own memory while the bytes it was
/// decoded from are still mapped), nowhere near what the frames claim.
const MEMORY_BOUND_KIB: u64 = 12 << 10;

/// What the memory test sends the receiving child.
#[derive(Serialize, Deserialize, Debug)]
enum Hostile {
    /// Tag 0.
    Data {
        blob: Bytes,
        words: Vec<u64>,
        text: String,
    },
    /// Tag 1: the child notes its peak memory under this name.
    Mark(String),
    /// Tag 2: the read end of a pipe to receive frames from next.
    Pipe(Fd<PipeReader>),
}

/// The start of a `Hostile::Data` body: the tag and the blob's length.
fn data_prefix(blob_len: u64) -> Vec<u8> {
    Enc::default().var(0).var(blob_len).done()
}

/// A ring memfd of `capacity` data bytes named `id`, sealed as a courier
/// sender seals one.
fn ring(capacity: u64, id: u64) -> File {
    ring_file(
        capacity,
        id,
        SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW,
    )
}

/// The short name of a receive error, for the child's report.
fn error_name(e: &RecvTimeoutError) -> String {
    match e {
        RecvTimeoutError::Failed(ChannelError::Frame(f)) => variant_name(&format!("{f:?}")),
        RecvTimeoutError::Failed(ChannelError::Io(io)) => format!("Io{:?}", io.kind()),
        RecvTimeoutError::Failed(other) => variant_name(&format!("{other:?}")),
        other => variant_name(&format!("{other:?}")),
    }
}

/// The receiving child of the memory test: receives until `Mark("done")`,
/// noting every typed error and its peak memory at each mark.
pub fn memory_receiver() {
    let pid = std::process::id();
    let hwm = || status_kib(pid, "VmHWM").expect("VmHWM");
    let start = hwm();
    let rx =
        Receiver::<Hostile>::from_socket(common::connect_to_parent(), Config::new().limit(LIMIT));
    let mut errors = Vec::new();
    let mut pipe_errors = Vec::new();
    let mut values = 0;
    let mut marks = vec![format!("hwm_start={start}")];
    loop {
        match rx.recv_timeout(CHILD_TIMEOUT) {
            Ok(Hostile::Data { blob, .. }) => {
                values += 1;
                assert!(blob.len() <= LIMIT);
            }
            Ok(Hostile::Mark(name)) => {
                marks.push(format!("hwm_{name}={}", hwm()));
                if name == "done" {
                    break;
                }
            }
            Ok(Hostile::Pipe(reader)) => {
                let (_unused, writer) = std::io::pipe().expect("pipe");
                let transport =
                    PipeTransport::new(reader.into_inner(), writer).expect("pipe transport");
                let piped = Receiver::<Hostile>::with_transport(
                    Box::new(transport),
                    Config::new().limit(LIMIT),
                );
                loop {
                    match piped.recv_timeout(CHILD_TIMEOUT) {
                        Ok(Hostile::Data { blob, .. }) => {
                            values += 1;
                            assert!(blob.len() <= LIMIT);
                        }
                        Ok(Hostile::Mark(name)) => marks.push(format!("hwm_{name}={}", hwm())),
                        Ok(Hostile::Pipe(_)) => panic!("a pipe over a pipe"),
                        Err(RecvTimeoutError::Disconnected) => break,
                        Err(e @ RecvTimeoutError::Failed(_)) => pipe_errors.push(error_name(&e)),
                        Err(e) => panic!("pipe: {e:?}"),
                    }
                }
            }
            Err(e @ RecvTimeoutError::Failed(_)) => errors.push(error_name(&e)),
            Err(e) => panic!("socket: {e:?}"),
        }
    }
    say(&format!(
        "result: values={values} errors={} pipe_errors={} {}",
        errors.join(","),
        pipe_errors.join(","),
        marks.join(" ")
    ));
}

#[test]
fn no_peer_makes_the_receiver_allocate_beyond_its_limit() {
    let _lock = common::fd_lock();
    let (listener, _, env) = common::abstract_listener();
    let (child, lines) = spawn_role("memory_receiver", &[(ADDR_ENV, &env)], false);
    let raw = listener
        .accept_timeout(CHILD_TIMEOUT)
        .expect("the child connects");
    let typed = Sender::<Hostile>::from_socket(raw.try_clone().expect("dup"), Config::new());
    let limit = LIMIT as u64;
    let mut expected: Vec<&str> = Vec::new();
    let mut values = 0;
    let data = |blob: usize| Hostile::Data {
        blob: Bytes::from(vec![7; blob]),
        words: vec![1, 2, 3],
        text: "honest".into(),
    };
    let mark = |name: &str| typed.send(Hostile::Mark(name.into())).expect("send a mark");
    let hostile = |frame: &[u8], fds: &[BorrowedFd<'_>]| {
        send_frame(&raw, frame, fds, CHILD_TIMEOUT).expect("send a hostile frame");
    };

    // Honest values first: a large one (through the ring) and a small one.
    typed.send(data(900 << 10)).expect("send");
    typed.send(data(10)).expect("send");
    values += 2;
    mark("honest");

    // Inline frames.
    hostile(&header(0, 0, 0, 1 << 40), &[]);
    expected.push("TooLarge"); // claims 1 TiB
    hostile(&header(0, 0, 0, u64::MAX), &[]);
    expected.push("TooLarge");
    let mut f = header(0, 0, 0, limit);
    f.extend_from_slice(&[0; 100]);
    hostile(&f, &[]);
    expected.push("BodyLengthMismatch"); // claims the limit, carries 100 bytes
    let mut f = header(0, 0, 0, 200 << 10);
    f.resize(HEADER_LEN + (200 << 10), 0);
    hostile(&f, &[]);
    expected.push("TooLong"); // longer than any inline frame
    for body in [
        data_prefix(1 << 40),                                          // a 1 TiB blob
        [data_prefix(0), Enc::default().var(1 << 60).done()].concat(), // 2^60 words
        [data_prefix(0), vec![0], Enc::default().var(1 << 33).done()].concat(), // an 8 GiB string
    ] {
        let mut f = header(0, 0, 0, body.len() as u64);
        f.extend_from_slice(&body);
        hostile(&f, &[]);
        expected.push("Decode");
    }

    // Bodies in memfds of 1 GiB (sparse).
    const GIB: u64 = 1 << 30;
    let sealed = memfd(&[], GIB, body_seals());
    hostile(&header(1, 0, 0, GIB), &[sealed.as_fd()]);
    expected.push("TooLarge");
    hostile(&header(1, 0, 0, limit), &[sealed.as_fd()]);
    expected.push("TrailingBytes"); // the limit's worth of zeros: an empty value, then bytes
    let small = memfd(&[], 4096, body_seals());
    hostile(&header(1, 0, 0, 1 << 63), &[small.as_fd()]);
    expected.push("TooLarge");
    let unsealed = memfd(&[], GIB, SealFlag::empty());
    hostile(&header(1, 0, 0, limit), &[unsealed.as_fd()]);
    expected.push("BadSharedMemory");
    // A value just under the limit in a 1 GiB memfd: honest, it arrives.
    let blob = LIMIT - 64;
    let body_len = data_prefix(blob as u64).len() + blob + 2; // + no words, no text
    let at_limit = memfd(&data_prefix(blob as u64), GIB, body_seals());
    hostile(&header(1, 0, 0, body_len as u64), &[at_limit.as_fd()]);
    values += 1;

    // Rings: one of 1 GiB, one of the largest size accepted (64 MiB). A
    // ring frame carries the ring's fd until the receiver acknowledges the
    // ring; these carry it every time, as a sender whose ring the receiver
    // maps for one frame at a time must.
    let id = 0x5ec0_0000_0000_0000 | u64::from(std::process::id());
    let huge = ring(GIB, id);
    hostile(&ring_frame(0, 1, 100, id, 0, 0), &[huge.as_fd()]);
    expected.push("BadSharedMemory"); // ring size out of bounds
    let capacity = 64 << 20;
    let big = ring(capacity, id + 1);
    let in_big = |len: u64, start: u64| (ring_frame(0, 1, len, id + 1, start, 0), big.as_fd());
    let (f, fd) = in_big(capacity - 4096, 0);
    hostile(&f, &[fd]);
    expected.push("TooLarge");
    let (f, fd) = in_big(limit, 0);
    hostile(&f, &[fd]);
    expected.push("TrailingBytes"); // zeros: an empty value, then bytes
    let (f, fd) = in_big(limit, capacity - 10);
    hostile(&f, &[fd]);
    expected.push("BadSharedMemory"); // body outside the ring
    let words = [data_prefix(0), Enc::default().var(1 << 60).done()].concat();
    big.write_all_at(&words, RING_CONTROL + limit)
        .expect("write the ring");
    let (f, fd) = in_big(words.len() as u64, limit);
    hostile(&f, &[fd]);
    expected.push("Decode");
    // Then the sparse ring walked by values within the limit: each one
    // only its 4-byte prefix written by the sender, the rest holes that
    // the receiver's reads fault in. A receiver that kept this ring mapped
    // would end up with the whole ring resident, 32 times its limit.
    for k in 2..34 {
        big.write_all_at(&data_prefix(blob as u64), RING_CONTROL + k * limit)
            .expect("write the ring");
        let (f, fd) = in_big(body_len as u64, k * limit);
        hostile(&f, &[fd]);
        values += 1;
    }
    mark("hostile");

    // A typed sender that does not know the limit (no handshake): its value
    // above the limit is refused by the receiver; one at the limit arrives.
    typed.send(data(LIMIT + 1)).expect("send above the limit");
    expected.push("TooLarge");
    typed.send(data(LIMIT - 64)).expect("send at the limit");
    values += 1;
    mark("limit");

    // Over a pipe: a 3 MiB frame that really arrives, an honest value, then
    // a 4 GiB claim and the end of the stream.
    let (reader, mut writer) = std::io::pipe().expect("pipe");
    typed
        .send(Hostile::Pipe(Fd::new(reader)))
        .expect("send the pipe");
    let mut pipe_expected = Vec::new();
    writer
        .write_all(&(3u32 << 20).to_le_bytes())
        .expect("write a prefix");
    writer.write_all(&vec![0xAB; 3 << 20]).expect("write 3 MiB");
    pipe_expected.push("TooLong");
    {
        let (unused, _) = std::io::pipe().expect("pipe");
        let piped = Sender::<Hostile>::with_transport(
            Box::new(PipeTransport::new(unused, writer.try_clone().expect("dup")).expect("pipe")),
            Config::new(),
        );
        piped.send(data(LIMIT - 64)).expect("send over the pipe");
        piped.send(Hostile::Mark("pipe".into())).expect("mark");
        values += 1;
        // Dropping it releases its copy of the write end.
    }
    writer
        .write_all(&u32::MAX.to_le_bytes())
        .expect("write a 4 GiB prefix");
    drop(writer);
    pipe_expected.push("TooLong");
    pipe_expected.push("IoUnexpectedEof");
    mark("done");

    let result = finish_result(child, &lines);
    drop((typed, raw, listener));
    assert_eq!(
        result["values"],
        values.to_string(),
        "honest values: {result:?}"
    );
    assert_eq!(
        result["errors"],
        expected.join(","),
        "typed errors of the hostile socket frames"
    );
    assert_eq!(
        result["pipe_errors"],
        pipe_expected.join(","),
        "typed errors of the hostile pipe frames"
    );
    let kib = |key: &str| -> u64 { result[key].parse().unwrap_or_else(|_| panic!("{key}")) };
    let start = kib("hwm_start");
    let done = kib("hwm_done");
    let growth = done - start;
    assert!(
        growth <= MEMORY_BOUND_KIB,
        "the receiver's peak memory grew by {growth} KiB (bound {MEMORY_BOUND_KIB} KiB); \
         marks: {result:?}"
    );
    let mut figures = Figures::new("security");
    figures
        .add("part", "memory")
        .add("limit_bytes", LIMIT)
        .add("hostile_frames", expected.len() + pipe_expected.len())
        .add("typed_errors", expected.len() + pipe_expected.len())
        .add("honest_values", values)
        .add("largest_claim", "2^64-1_bytes")
        .add("hwm_start_kib", start);
    for mark in ["honest", "hostile", "limit", "pipe", "done"] {
        figures.add(&format!("hwm_{mark}_kib"), kib(&format!("hwm_{mark}")));
    }
    figures
        .add("hwm_growth_kib", growth)
        .add("bound_kib", MEMORY_BOUND_KIB);
    figures.report();
}
