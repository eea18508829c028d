//! The fd table of the message being encoded or decoded on this thread.
//!
//! serde has no side channel, so fd fields reach the table through a
//! thread-local that a send or receive installs for exactly the duration of
//! its encode or decode (restoring what was there before, so nested use is
//! safe). Outside such a scope, an fd field cannot be serialized: courier
//! fds only travel through courier channels.

use std::cell::{Cell, RefCell};
#[cfg(test)]
use std::os::fd::AsFd;
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::{ChannelError, FrameError};

// Every scope below is entered and left on each send and receive, so the
// common case (a value without fd fields) touches only `const` cells:
// no allocation, no lazily registered destructor, nothing moved.

/// What fd fields being serialized on this thread do now.
#[derive(Clone, Copy)]
enum Out {
    /// Outside any courier encode: fd fields cannot be serialized.
    Off,
    /// Append copies to `OUT_FDS`; the current message's table starts at
    /// `base` (an outer, nested encode owns what is below).
    Collect { base: usize },
    /// Only number them: the size of the encoding is being measured.
    Count { next: u32 },
}

/// What fd fields being deserialized on this thread do now.
#[derive(Clone, Copy)]
enum In {
    /// Outside any courier decode.
    Off,
    /// A frame that carried no fds: any index is out of range.
    Empty,
    /// A frame with fds: `IN_TABLE` holds them.
    Table,
}

thread_local! {
    static OUT: Cell<Out> = const { Cell::new(Out::Off) };
    /// Copies collected by the encodes in progress on this thread.
    static OUT_LEN: Cell<usize> = const { Cell::new(0) };
    static OUT_FDS: RefCell<Vec<OwnedFd>> = const { RefCell::new(Vec::new()) };
    static IN: Cell<In> = const { Cell::new(In::Off) };
    /// The first out-of-range index seen in an `Empty` scope.
    static IN_EMPTY_VIOLATION: Cell<Option<u32>> = const { Cell::new(None) };
    static IN_TABLE: RefCell<Option<Incoming>> = const { RefCell::new(None) };
}

/// The table of a message being decoded, and the first violation seen.
struct Incoming {
    fds: Vec<Option<OwnedFd>>,
    violation: Option<ChannelError>,
}

/// Runs `encode` with fd fields collected into `fds` (after what it holds).
#[inline]
pub(crate) fn encoding<R>(fds: &mut Vec<OwnedFd>, encode: impl FnOnce() -> R) -> R {
    let base = OUT_LEN.get();
    // Restores the outer scope and takes this scope's copies back out of
    // `OUT_FDS`, also when `encode` panics (a user's Serialize impl may),
    // so none is stranded in the thread-local.
    struct Leave<'a> {
        outer: Out,
        base: usize,
        fds: &'a mut Vec<OwnedFd>,
    }
    impl Drop for Leave<'_> {
        #[inline]
        fn drop(&mut self) {
            OUT.set(self.outer);
            if OUT_LEN.get() > self.base {
                take_collected(self.base, self.fds);
            }
        }
    }
    let _leave = Leave {
        outer: OUT.replace(Out::Collect { base }),
        base,
        fds,
    };
    encode()
}

/// Moves the copies collected since `base` out of `OUT_FDS` into `fds`.
#[inline(never)]
fn take_collected(base: usize, fds: &mut Vec<OwnedFd>) {
    OUT_LEN.set(base);
    OUT_FDS.with(|t| {
        let mut t = t.borrow_mut();
        if base == 0 && fds.is_empty() {
            // The outermost message owns the whole table: it takes the
            // vector as it is (`recycle` brings its memory back).
            std::mem::swap(fds, &mut *t);
        } else {
            fds.extend(t.drain(base..));
        }
    });
}

/// Closes the fds in `fds` and gives the vector's memory back to this
/// thread's table, so fds cost no allocation in steady state.
#[inline]
pub(crate) fn recycle(fds: Vec<OwnedFd>) {
    if fds.capacity() > 0 {
        give_back(fds);
    }
}

#[inline(never)]
fn give_back(mut fds: Vec<OwnedFd>) {
    fds.clear();
    // `try_with`: a send from a thread-local's destructor still works.
    let _ = OUT_FDS.try_with(|t| {
        if let Ok(mut t) = t.try_borrow_mut() {
            if t.is_empty() && t.capacity() < fds.capacity() {
                *t = fds;
            }
        }
    });
}

/// Runs `measure` (an encoding whose output is only counted) with fd
/// fields numbered, not duplicated. Returns its result and how many fd
/// fields it met.
pub(crate) fn sizing<R>(measure: impl FnOnce() -> R) -> (R, u32) {
    struct Leave(Out);
    impl Drop for Leave {
        fn drop(&mut self) {
            OUT.set(self.0);
        }
    }
    let _leave = Leave(OUT.replace(Out::Count { next: 0 }));
    let result = measure();
    let counted = match OUT.get() {
        Out::Count { next } => next,
        Out::Off | Out::Collect { .. } => 0,
    };
    (result, counted)
}

/// Records a copy of `fd` (`F_DUPFD_CLOEXEC`) in the outgoing table and
/// returns its index. The table owns the copy, so what is sent is exactly
/// the file the field held when it was serialized, even if a custom
/// `Serialize` impl handed over a temporary that has been closed since.
pub(crate) fn push(fd: BorrowedFd<'_>) -> Result<u32, String> {
    match OUT.get() {
        Out::Collect { base } => {
            let copy = fd
                .try_clone_to_owned()
                .map_err(|e| format!("could not duplicate a file descriptor: {e}"))?;
            let len = OUT_FDS.with(|t| {
                let mut t = t.borrow_mut();
                t.push(copy);
                t.len()
            });
            OUT_LEN.set(len);
            Ok((len - 1 - base) as u32)
        }
        Out::Count { next } => {
            OUT.set(Out::Count { next: next + 1 });
            Ok(next)
        }
        Out::Off => Err("file descriptors can only be serialized by a courier channel".into()),
    }
}

/// Runs `decode` with `fds` as the incoming table. Returns its result, and
/// the violation an fd field recorded, or `FdsLeftOver` when fds were not
/// used. Every fd still in the table afterwards is closed.
#[inline]
pub(crate) fn decoding<R>(
    fds: &mut Vec<Option<OwnedFd>>,
    decode: impl FnOnce() -> R,
) -> (R, Option<ChannelError>) {
    if fds.is_empty() {
        return decoding_empty(decode);
    }
    decoding_table(fds, decode)
}

/// `decoding` of a frame with fds: the table is installed.
#[inline(never)]
fn decoding_table<R>(
    fds: &mut Vec<Option<OwnedFd>>,
    decode: impl FnOnce() -> R,
) -> (R, Option<ChannelError>) {
    /// Puts the outer scope back, also when `decode` panics. `outer_table`
    /// is `None` once the normal path has put the outer table back itself.
    struct Leave {
        outer: In,
        outer_table: Option<Option<Incoming>>,
    }
    impl Drop for Leave {
        fn drop(&mut self) {
            IN.set(self.outer);
            if let Some(outer) = self.outer_table.take() {
                let ours = IN_TABLE.with(|t| t.replace(outer));
                drop(ours); // outside the borrow: closes fds stranded by a panic
            }
        }
    }
    let mine = Incoming {
        fds: std::mem::take(fds),
        violation: None,
    };
    let mut leave = Leave {
        outer: IN.replace(In::Table),
        outer_table: Some(IN_TABLE.with(|t| t.replace(Some(mine)))),
    };
    let result = decode();
    let outer = leave.outer_table.take().flatten();
    let Incoming {
        fds: table,
        mut violation,
    } = IN_TABLE.with(|t| t.replace(outer)).unwrap_or(Incoming {
        fds: Vec::new(),
        violation: None,
    });
    drop(leave);
    *fds = table;
    let left = fds.iter().filter(|f| f.is_some()).count();
    if violation.is_none() && left > 0 {
        violation = Some(FrameError::FdsLeftOver { count: left }.into());
    }
    fds.clear(); // closes what was not taken
    (result, violation)
}

/// `decoding` of a frame without fds: only cells change.
#[inline]
fn decoding_empty<R>(decode: impl FnOnce() -> R) -> (R, Option<ChannelError>) {
    struct Leave {
        outer: In,
        outer_violation: Option<u32>,
    }
    impl Drop for Leave {
        #[inline]
        fn drop(&mut self) {
            IN.set(self.outer);
            IN_EMPTY_VIOLATION.set(self.outer_violation);
        }
    }
    let leave = Leave {
        outer: IN.replace(In::Empty),
        outer_violation: IN_EMPTY_VIOLATION.replace(None),
    };
    let result = decode();
    let violation = IN_EMPTY_VIOLATION
        .get()
        .map(|index| FrameError::FdIndexOutOfRange { index, count: 0 }.into());
    drop(leave);
    (result, violation)
}

/// Takes the fd at `index` from the incoming table.
pub(crate) fn take(index: u32) -> Result<OwnedFd, ()> {
    match IN.get() {
        In::Off => Err(()),
        In::Empty => {
            if IN_EMPTY_VIOLATION.get().is_none() {
                IN_EMPTY_VIOLATION.set(Some(index));
            }
            Err(())
        }
        In::Table => IN_TABLE.with(|t| {
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
        }),
    }
}

/// Records why a field refused the fd it was given.
pub(crate) fn refuse(reason: String) {
    if let In::Table = IN.get() {
        IN_TABLE.with(|t| {
            if let Some(incoming) = t.borrow_mut().as_mut() {
                incoming
                    .violation
                    .get_or_insert(ChannelError::Refused(reason));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nested_decode_leaves_the_outer_table_intact() {
        let null = || -> OwnedFd { std::fs::File::open("/dev/null").unwrap().into() };
        let mut outer = vec![Some(null()), Some(null())];
        let (taken, violation) = decoding(&mut outer, || {
            let first = take(0).expect("outer fd 0");
            let mut inner = vec![Some(null())];
            let (inner_taken, inner_violation) = decoding(&mut inner, || take(0).is_ok());
            assert!(inner_taken && inner_violation.is_none());
            let mut empty = Vec::new();
            let (_, empty_violation) = decoding(&mut empty, || take(5).is_err());
            assert!(empty_violation.is_some(), "index 5 of no fds");
            (first, take(1).expect("outer fd 1 after the nested decodes"))
        });
        assert!(violation.is_none(), "{violation:?}");
        drop(taken);
        assert!(IN_TABLE.with(|t| t.borrow().is_none()) && matches!(IN.get(), In::Off));
    }

    #[test]
    fn a_panicking_codec_strands_no_table() {
        let fd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let mut table = vec![Some(fd)];
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decoding(&mut table, || panic!("a Deserialize impl panicked"))
        }));
        assert!(panicked.is_err());
        assert!(
            IN_TABLE.with(|t| t.borrow().is_none()) && matches!(IN.get(), In::Off),
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
            OUT_FDS.with(|t| t.borrow().is_empty()) && matches!(OUT.get(), Out::Off),
            "the table stayed installed"
        );
        assert!(take(0).is_err(), "no table may answer outside a decode");
    }
}
