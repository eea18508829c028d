//! The fd table of the message being encoded or decoded on this thread.
//!
//! serde has no side channel, so fd fields reach the table through a
//! thread-local that a send or receive installs for exactly the duration of
//! its encode or decode (restoring what was there before, so nested use is
//! safe). Outside such a scope, an fd field cannot be serialized: courier
//! fds only travel through courier channels.

use std::cell::RefCell;
#[cfg(test)]
use std::os::fd::AsFd;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::thread::LocalKey;

use crate::{ChannelError, FrameError};

thread_local! {
    static OUTGOING: RefCell<Option<Outgoing>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Incoming>> = const { RefCell::new(None) };
}

/// The table of a message being encoded, or, while only its size is
/// measured, the number of fds it would hold.
enum Outgoing {
    Collect(Vec<OwnedFd>),
    Count(u32),
}

/// The table of a message being decoded, and the first violation seen.
struct Incoming {
    fds: Vec<Option<OwnedFd>>,
    violation: Option<ChannelError>,
}

/// Installs `value` in `key` while `run` runs and returns it with the
/// result. Whatever was installed before is put back afterwards, also when
/// `run` panics (a user's `Serialize`/`Deserialize` impl may): the table and
/// its fds are then dropped instead of being stranded in the thread-local.
fn scoped<T: 'static, R>(
    key: &'static LocalKey<RefCell<Option<T>>>,
    value: T,
    run: impl FnOnce() -> R,
) -> (Option<T>, R) {
    struct Restore<T: 'static> {
        key: &'static LocalKey<RefCell<Option<T>>>,
        previous: Option<T>,
    }
    impl<T: 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            let previous = self.previous.take();
            let ours = self.key.with(|t| t.replace(previous));
            drop(ours); // outside the borrow: closes fds stranded by a panic
        }
    }
    let previous = key.with(|t| t.replace(Some(value)));
    let restore = Restore { key, previous };
    let result = run();
    let mine = key.with(|t| t.take());
    drop(restore);
    (mine, result)
}

/// Runs `encode` with `fds` as the outgoing table; fd fields append to it.
pub(crate) fn encoding<R>(fds: &mut Vec<OwnedFd>, encode: impl FnOnce() -> R) -> R {
    let (mine, result) = scoped(&OUTGOING, Outgoing::Collect(std::mem::take(fds)), encode);
    if let Some(Outgoing::Collect(table)) = mine {
        *fds = table;
    }
    result
}

/// Runs `measure` (an encoding whose output is only counted) with a table
/// that numbers fd fields without duplicating them.
pub(crate) fn sizing<R>(measure: impl FnOnce() -> R) -> R {
    scoped(&OUTGOING, Outgoing::Count(0), measure).1
}

/// Records a copy of `fd` (`F_DUPFD_CLOEXEC`) in the outgoing table and
/// returns its index. The table owns the copy, so what is sent is exactly
/// the file the field held when it was serialized, even if a custom
/// `Serialize` impl handed over a temporary that has been closed since.
pub(crate) fn push(fd: BorrowedFd<'_>) -> Result<u32, String> {
    OUTGOING.with(|t| match t.borrow_mut().as_mut() {
        Some(Outgoing::Collect(fds)) => {
            fds.push(
                fd.try_clone_to_owned()
                    .map_err(|e| format!("could not duplicate a file descriptor: {e}"))?,
            );
            Ok((fds.len() - 1) as u32)
        }
        Some(Outgoing::Count(count)) => {
            *count += 1;
            Ok(*count - 1)
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
    let (mine, result) = scoped(&INCOMING, mine, decode);
    let Incoming {
        fds: table,
        mut violation,
    } = mine.unwrap_or(Incoming {
        fds: Vec::new(),
        violation: None,
    });
    *fds = table;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_codec_strands_no_table() {
        let fd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let mut table = vec![Some(fd)];
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decoding(&mut table, || panic!("a Deserialize impl panicked"))
        }));
        assert!(panicked.is_err());
        assert!(
            INCOMING.with(|t| t.borrow().is_none()),
            "the table stayed installed"
        );

        let mut out = Vec::new();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            encoding(&mut out, || {
                push(std::fs::File::open("/dev/null").unwrap().as_fd()).unwrap();
                panic!("a Serialize impl panicked")
            })
        }));
        assert!(panicked.is_err());
        assert!(
            OUTGOING.with(|t| t.borrow().is_none()),
            "the table stayed installed"
        );
        assert!(take(0).is_err(), "no table may answer outside a decode");
    }
}
