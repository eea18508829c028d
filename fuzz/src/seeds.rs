//! Seed inputs for each target, made from frames a real courier sender
//! writes (captured raw from the socket) and hellos laid out as the
//! handshake module documents. `examples/seeds.rs` writes them to
//! `seeds/<target>/`; the tests below run every one of them through its
//! target, and any input kept in `regressions/<target>/`.

use std::fs::File;
use std::io::PipeReader;

use courier_channel::{channel, Bytes, Config, Fd, Sender, WIRE_VERSION};
use courier_transport::SeqPacketSocket;

use crate::fd_table::{memfd_body, ring_body, RING_ID};
use crate::handshake::{MODE_LISTENER, MODE_PIPE, PROTOCOL, REFUSE_FDS, STALL, VERSION, WITH_FD};
use crate::{header, inline_frame, probe_frame, ring_frame, sample_record, Message, KIND_SHARED};

/// The targets, by name.
pub const TARGETS: [&str; 4] = ["frame_decode", "fd_table", "handshake", "pipe_framing"];

/// Runs `data` through the target called `name`; returns what the
/// receive gave for `frame_decode` and `fd_table`, "checked" otherwise.
pub fn run(name: &str, data: &[u8]) -> &'static str {
    match name {
        "frame_decode" => crate::frame_decode::run(data),
        "fd_table" => crate::fd_table::run(data),
        "handshake" => {
            crate::handshake::run(data);
            "checked"
        }
        "pipe_framing" => {
            crate::pipe_framing::run(data);
            "checked"
        }
        other => panic!("no target {other}"),
    }
}

/// The frame (and how many fds came with it) a courier sender with
/// `config` writes for `value`.
pub fn capture(value: Message, config: Config) -> (Vec<u8>, usize) {
    let (a, raw) = SeqPacketSocket::pair().expect("socketpair");
    let tx = Sender::<Message>::from_socket(a, config);
    tx.send(value).expect("send");
    let mut buf = vec![0; 256 << 10];
    let mut fds = Vec::new();
    let got = raw.recv_with_fds(&mut buf, &mut fds, 253).expect("recv");
    buf.truncate(got.len);
    (buf, fds.len())
}

fn frame(value: Message) -> Vec<u8> {
    capture(value, Config::new()).0
}

fn devnull() -> Fd<File> {
    Fd::new(File::open("/dev/null").expect("/dev/null"))
}

fn pipe_reader() -> Fd<PipeReader> {
    Fd::new(std::io::pipe().expect("pipe").0)
}

/// Values without fds, each as its frame.
fn plain_frames() -> Vec<(&'static str, Vec<u8>)> {
    let deep = (0..4).fold(Message::Empty, |m, _| Message::Deep(Some(Box::new(m))));
    vec![
        ("empty", frame(Message::Empty)),
        ("number", frame(Message::Number(u64::MAX))),
        ("signed", frame(Message::Signed(-3))),
        ("text", frame(Message::Text("hello, courier".into()))),
        ("blob", frame(Message::Blob(Bytes(vec![0xAB; 100])))),
        ("list", frame(Message::List(vec![1, 300, 65535]))),
        ("record", frame(Message::Record(sample_record()))),
        ("deep", frame(deep)),
        (
            "any_note",
            frame(Message::Any {
                fd: None,
                note: Some("no fd".into()),
            }),
        ),
    ]
}

/// The seeds of target `name`: (file name, input).
pub fn seeds(name: &str) -> Vec<(String, Vec<u8>)> {
    let named = |list: Vec<(&str, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        list.into_iter().map(|(n, d)| (n.to_owned(), d)).collect()
    };
    match name {
        "frame_decode" => {
            let mut list = plain_frames();
            list.push(("file_without_its_fd", frame(Message::File(devnull()))));
            // Header-only frames: a body in a memfd, a body in the ring.
            let text = || Message::Text("x".repeat(600)); // past the 496 bytes always sent inline
            let shared = capture(text(), Config::new().inline_threshold(0).shared_ring(0));
            list.push(("shared_header", shared.0));
            let ring = capture(text(), Config::new().inline_threshold(0));
            list.push(("ring_header", ring.0));
            named(list)
        }
        "fd_table" => {
            let with = |kinds: &[u8], frame: Vec<u8>| {
                let mut input = vec![kinds.len() as u8, 0];
                input.extend_from_slice(kinds);
                input.extend_from_slice(&frame);
                input
            };
            let (tx, _rx) = channel::<u32>().expect("channel");
            let (_tx, rx) = channel::<String>().expect("channel");
            let files: Vec<Fd<File>> = (0..3).map(|_| devnull()).collect();
            let all: Vec<Fd<File>> = (0..253).map(|_| devnull()).collect();
            let mut many = vec![255, 0];
            many.extend_from_slice(&[0; 253]);
            many.extend_from_slice(&frame(Message::Files(all)));
            let mut refused = with(&[0], frame(Message::File(devnull())));
            refused[1] = 1;
            vec![
                ("file", with(&[0], frame(Message::File(devnull())))),
                ("pipe", with(&[1], frame(Message::Pipe(pipe_reader())))),
                ("files", with(&[0, 3, 8], frame(Message::Files(files)))),
                (
                    "any",
                    with(
                        &[7],
                        frame(Message::Any {
                            fd: Some(Fd::new(devnull().into_inner().into())),
                            note: None,
                        }),
                    ),
                ),
                ("sender", with(&[5], frame(Message::Channel(tx)))),
                ("receiver", with(&[5], frame(Message::Reply(rx)))),
                (
                    "shared",
                    with(
                        &[3],
                        header(KIND_SHARED, 0, 0, memfd_body().len() as u64).to_vec(),
                    ),
                ),
                (
                    "ring",
                    with(
                        &[9],
                        ring_frame(0, true, ring_body().len() as u64, RING_ID, 0),
                    ),
                ),
                ("253_fds", many),
                ("refused", refused),
                ("text_no_fds", with(&[], frame(Message::Text("t".into())))),
            ]
            .into_iter()
            .map(|(n, d)| (n.to_owned(), d))
            .collect()
        }
        "handshake" => {
            let hello = |name: &str, version: u32, flags: u8| {
                let mut h = b"CRHS".to_vec();
                h.extend_from_slice(&[WIRE_VERSION, flags, 0, 0]);
                h.extend_from_slice(&version.to_le_bytes());
                h.extend_from_slice(&(1u64 << 20).to_le_bytes());
                h.push(name.len() as u8);
                h.extend_from_slice(name.as_bytes());
                h
            };
            let frames = |flags: u8, frames: Vec<Vec<u8>>| {
                let mut input = vec![flags];
                for f in &frames {
                    input.extend_from_slice(&(f.len() as u16).to_le_bytes());
                    input.extend_from_slice(f);
                }
                input
            };
            let stream = |flags: u8, frames: Vec<Vec<u8>>| {
                let mut input = vec![flags];
                for f in &frames {
                    input.extend_from_slice(&(f.len() as u32).to_le_bytes());
                    input.extend_from_slice(f);
                }
                input
            };
            let ok = hello(PROTOCOL, VERSION, 1);
            let text = frame(Message::Text("after the hello".into()));
            named(vec![
                ("pair", frames(0, vec![ok.clone()])),
                (
                    "pair_then_values",
                    frames(0, vec![ok.clone(), probe_frame(), text.clone()]),
                ),
                (
                    "pair_no_fds",
                    frames(REFUSE_FDS, vec![hello(PROTOCOL, VERSION, 0)]),
                ),
                ("pair_fd_attached", frames(WITH_FD, vec![ok.clone()])),
                (
                    "pair_other_protocol",
                    frames(0, vec![hello("other", VERSION, 1)]),
                ),
                ("pair_other_version", frames(0, vec![hello(PROTOCOL, 2, 1)])),
                ("pair_stall", vec![STALL]),
                (
                    "listener",
                    frames(MODE_LISTENER, vec![ok.clone(), probe_frame()]),
                ),
                (
                    "listener_stall",
                    frames(MODE_LISTENER | STALL, vec![ok.clone()]),
                ),
                (
                    "pipe",
                    stream(MODE_PIPE, vec![ok.clone(), probe_frame(), text]),
                ),
                ("pipe_torn", {
                    let mut s = stream(MODE_PIPE, vec![ok.clone()]);
                    s.truncate(s.len() - 3);
                    s
                }),
            ])
        }
        "pipe_framing" => {
            let stream = |flags: u8, size: u8, frames: &[Vec<u8>]| {
                let mut input = vec![flags, size];
                for f in frames {
                    input.extend_from_slice(&(f.len() as u32).to_le_bytes());
                    input.extend_from_slice(f);
                }
                input
            };
            let values: Vec<Vec<u8>> = plain_frames().into_iter().map(|(_, f)| f).collect();
            let mut torn = stream(0, 255, &[vec![7; 100]]);
            torn.truncate(torn.len() - 50);
            named(vec![
                (
                    "raw",
                    stream(0, 4, &[b"a".to_vec(), vec![1; 40], Vec::new()]),
                ),
                (
                    "raw_too_long",
                    stream(0, 1, &[vec![2; 40], b"next".to_vec()]),
                ),
                ("raw_torn", torn),
                ("typed", stream(1, 16, &values)),
                (
                    "typed_too_long",
                    stream(
                        1,
                        1,
                        &[frame(Message::Blob(Bytes(vec![3; 64]))), probe_frame()],
                    ),
                ),
                (
                    "typed_fd",
                    stream(1, 16, &[inline_frame(1, &[7, 0]), probe_frame()]),
                ),
            ])
        }
        other => panic!("no target {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The targets count this process's fds: one test at a time.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    /// What the seeds of the receiving targets must give.
    fn expected(target: &str, name: &str) -> Option<&'static str> {
        Some(match (target, name) {
            ("frame_decode", "file_without_its_fd") => "frame error",
            ("frame_decode", "shared_header" | "ring_header") => "frame error",
            ("frame_decode", _) => "value",
            ("fd_table", "refused") => "skipped", // SO_PASSRIGHTS (Linux 6.16+)
            ("fd_table", _) => "value",
            _ => return None,
        })
    }

    #[test]
    fn every_seed_passes_its_target() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        for target in TARGETS {
            for (name, data) in seeds(target) {
                let got = run(target, &data);
                eprintln!("{target}/{name}: {} bytes: {got}", data.len());
                if let Some(want) = expected(target, &name) {
                    let refused_anyway = name == "refused" && got == "fds not accepted";
                    assert!(
                        got == want || refused_anyway,
                        "{target}/{name}: {got}, expected {want}"
                    );
                }
            }
        }
    }

    /// Inputs kept in `regressions/<target>/` (crashes found and fixed).
    #[test]
    fn every_regression_input_passes_its_target() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
        for target in TARGETS {
            let Ok(dir) = std::fs::read_dir(root.join(target)) else {
                continue;
            };
            for entry in dir {
                let path = entry.expect("dir entry").path();
                eprintln!("{}", path.display());
                run(target, &std::fs::read(&path).expect("read input"));
            }
        }
    }

    #[test]
    fn the_pipe_reference_reads_what_it_should() {
        use crate::pipe_framing::{reference, Item};
        let stream = [1, 0, 0, 0, b'a', 9, 0, 0, 0, 1, 2];
        assert_eq!(
            reference(&stream, 4),
            [Item::Frame(b"a"), Item::TooLong(9), Item::Torn, Item::End]
        );
    }
}
