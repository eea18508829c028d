//! A recursive value type nested far deeper than any real message, fed by a
//! raw peer inline (100,000 levels in one 100 KB frame) and through shared
//! memory (1,000,000 levels): without courier's depth limit the decode
//! overflows the stack and aborts the process. The receive must fail with
//! `FrameError::TooDeep` instead, close the memfd, and stay usable.

mod common;

use std::os::fd::AsFd;

use common::{raw_peer, sealed_memfd, send_raw, with_fd_baseline, RawHeader, RECV_TIMEOUT};
use courier_channel::{ChannelError, Config, FrameError, RecvTimeoutError, MAX_DEPTH};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Tree {
    Leaf,
    Node(Box<Tree>),
}

/// `levels` × `Node(` then `Leaf`, in postcard: one byte per level.
fn nested(levels: usize) -> Vec<u8> {
    let mut body = vec![1u8; levels];
    body.push(0);
    body
}

fn expect_too_deep(got: Result<Tree, RecvTimeoutError>) {
    match got {
        Err(RecvTimeoutError::Failed(ChannelError::Frame(FrameError::TooDeep { limit }))) => {
            assert_eq!(limit, MAX_DEPTH)
        }
        other => panic!("expected TooDeep, got {other:?}"),
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    with_fd_baseline("deep nesting", || {
        let (peer, rx) = raw_peer::<Tree>(Config::new());

        let body = nested(100_000);
        send_raw(
            &peer,
            &RawHeader::inline(0, body.len() as u64).frame(&body),
            &[],
        );
        expect_too_deep(rx.recv_timeout(RECV_TIMEOUT));

        let body = nested(1_000_000);
        let memfd = sealed_memfd(&body);
        send_raw(
            &peer,
            &RawHeader::shared(0, body.len() as u64).frame(&[]),
            &[memfd.as_fd()],
        );
        drop(memfd);
        expect_too_deep(rx.recv_timeout(RECV_TIMEOUT));

        // Within the limit it decodes, and the channel is still usable.
        let body = nested(MAX_DEPTH - 1);
        send_raw(
            &peer,
            &RawHeader::inline(0, body.len() as u64).frame(&body),
            &[],
        );
        let mut tree = rx
            .recv_timeout(RECV_TIMEOUT)
            .expect("a value within the limit");
        let mut levels = 0;
        while let Tree::Node(inner) = tree {
            tree = *inner;
            levels += 1;
        }
        assert_eq!(levels, MAX_DEPTH - 1);
    });
}
