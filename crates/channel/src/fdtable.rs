//! The fd table of the message being encoded or decoded on this thread.
//!
//! serde has no side channel, so fd fields reach the table through a
//! thread-local that a send or receive installs for exactly the duration of
//! its encode or decode (restoring what was there before, so nested use is
//! safe). Outside such a scope, an fd field cannot be serialized: courier
//! fds only travel through courier channels.

use std::cell::RefCell;
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::{ChannelError, FrameError};

thread_local! {
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Incoming>> = const { RefCell::new(None) };
}

/// The table of a message being decoded, and the first violation seen.
struct Incoming {
    fds: Vec<Option<OwnedFd>>,
    violation: Option<ChannelError>,
}

/// Runs `encode` with `fds` as the outgoing table; fd fields append to it.
pub(crate) fn encoding<R>(fds: &mut Vec<OwnedFd>, encode: impl FnOnce() -> R) -> R {
    let previous = OUTGOING.with(|t| t.replace(Some(std::mem::take(fds))));
    let result = encode();
    *fds = OUTGOING.with(|t| t.replace(previous)).unwrap_or_default();
    result
}

/// Records a copy of `fd` (`F_DUPFD_CLOEXEC`) in the outgoing table and
/// returns its index. The table owns the copy, so what is sent is exactly
/// the file the field held when it was serialized, even if a custom
/// `Serialize` impl handed over a temporary that has been closed since.
pub(crate) fn push(fd: BorrowedFd<'_>) -> Result<u32, String> {
    OUTGOING.with(|t| match t.borrow_mut().as_mut() {
        Some(fds) => {
            fds.push(
                fd.try_clone_to_owned()
                    .map_err(|e| format!("could not duplicate a file descriptor: {e}"))?,
            );
            Ok((fds.len() - 1) as u32)
        }
        None => Err("file descriptors can only be serialized by a courier channel".into()),
    })
}

/// Runs `decode` with `fds` as the incoming table. Returns its result, and
/// the violation an fd field recorded, or `FdsLeftOver` when fds were not
/// used. Every fd still in the table afterwards is closed.
pub(crate) fn decoding<R>(
    fds: &mut Vec<Option<OwnedFd>>,
    decode: impl FnOnce() -> R,
) -> (R, Option<ChannelError>) {
    let mine = Incoming {
        fds: std::mem::take(fds),
        violation: None,
    };
    let previous = INCOMING.with(|t| t.replace(Some(mine)));
    let result = decode();
    let mine = INCOMING
        .with(|t| t.replace(previous))
        .expect("table installed above");
    *fds = mine.fds;
    let mut violation = mine.violation;
    let left = fds.iter().filter(|f| f.is_some()).count();
    if violation.is_none() && left > 0 {
        violation = Some(FrameError::FdsLeftOver { count: left }.into());
    }
    fds.clear(); // closes what was not taken
    (result, violation)
}

/// Takes the fd at `index` from the incoming table.
pub(crate) fn take(index: u32) -> Result<OwnedFd, ()> {
    INCOMING.with(|t| {
        let mut table = t.borrow_mut();
        let Some(incoming) = table.as_mut() else {
            return Err(());
        };
        let count = incoming.fds.len();
        let error = match incoming.fds.get_mut(index as usize) {
            Some(slot) => match slot.take() {
                Some(fd) => return Ok(fd),
                None => FrameError::FdIndexReused { index },
            },
            None => FrameError::FdIndexOutOfRange { index, count },
        };
        incoming.violation.get_or_insert(error.into());
        Err(())
    })
}

/// Records why a field refused the fd it was given.
pub(crate) fn refuse(reason: String) {
    INCOMING.with(|t| {
        if let Some(incoming) = t.borrow_mut().as_mut() {
            incoming
                .violation
                .get_or_insert(ChannelError::Refused(reason));
        }
    });
}
