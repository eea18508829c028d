//! Steady-state heap allocations per message.
//!
//! A counting global allocator (wrapping `System`) counts `alloc`/`realloc`
//! calls made by the measuring thread only, so the harness's other threads
//! cannot disturb the count. After a warm-up, 10,000 send+recv round trips
//! of a `u64` and of a small struct through one `channel()` on one thread
//! must allocate nothing (the crate promises reused buffers), over a
//! SEQPACKET pair and over pipes. The counts for
//! a message carrying one fd and for a 1 MiB `Bytes` are printed, not
//! asserted.

// Implementing `GlobalAlloc` is an unsafe trait impl that forwards raw
// pointers to `System`: the only unsafe code in courier-channel's tests.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use courier_channel::{channel, Bytes, Fd, Receiver, Sender};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Allocations (and reallocations) made while a thread was counting.
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations are counted. `const`-initialised
    /// and without a destructor, so reading it never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

/// Serialises the measuring tests: they share [`ALLOCATIONS`].
static MEASURING: Mutex<()> = Mutex::new(());

/// The longest a receive of an already-queued value may wait.
const HANG: Duration = Duration::from_secs(10);

fn note_allocation() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

struct CountingAllocator;

// SAFETY: every method forwards its arguments unchanged to `System`, which
// implements `GlobalAlloc` correctly; the counting only touches an atomic
// and a const-initialised thread-local, neither of which allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for
        // `layout`, which is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through this allocator)
        // with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: `ptr`/`layout` come from this allocator, i.e. `System`, and
        // `new_size` satisfies `realloc`'s contract, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs `f` and returns the allocations this thread made during it.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

const WARM_UP: usize = 100;
const ROUNDS: usize = 10_000;

/// A small fixed-size message.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
struct Small {
    id: u32,
    offset: i64,
    flags: u16,
    done: bool,
}

fn small(i: u64) -> Small {
    Small {
        id: i as u32,
        offset: -(i as i64),
        flags: (i % 65_536) as u16,
        done: i.is_multiple_of(2),
    }
}

/// One send and one receive on this thread.
fn round_trip<T: Serialize + DeserializeOwned>(tx: &Sender<T>, rx: &Receiver<T>, value: T) -> T {
    tx.send(value).expect("send");
    rx.recv_timeout(HANG).expect("recv a value already queued")
}

/// Allocations over `ROUNDS` round trips of `make(i)` after a warm-up;
/// values are made outside the counted section.
fn measure<T>(make: impl Fn(u64) -> T) -> usize
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    measure_over(|| channel::<T>().expect("channel"), make)
}

/// [`measure`] over the channel `pair` makes.
fn measure_over<T>(
    pair: impl FnOnce() -> (Sender<T>, Receiver<T>),
    make: impl Fn(u64) -> T,
) -> usize
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let _serial = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let (tx, rx) = pair();
    for i in 0..WARM_UP as u64 {
        assert_eq!(round_trip(&tx, &rx, make(i)), make(i), "warm-up {i}");
    }
    let mut total = 0;
    for i in 0..ROUNDS as u64 {
        let (value, expected) = (make(i), make(i));
        let mut got = None;
        total += allocations_in(|| got = Some(round_trip(&tx, &rx, value)));
        assert_eq!(got, Some(expected), "round trip {i}");
    }
    total
}

/// The counter is not vacuous: it sees an allocation by this thread.
#[test]
fn counter_sees_allocations() {
    let _serial = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let count = allocations_in(|| drop(std::hint::black_box(Box::new(42u64))));
    assert!(count >= 1, "the counting allocator saw {count} allocations");
}

#[test]
fn small_u64_allocates_nothing() {
    let count = measure(|i| i);
    eprintln!("u64: {count} allocations in {ROUNDS} round trips");
    assert_eq!(count, 0, "{count} allocations in {ROUNDS} u64 round trips");
}

#[test]
fn small_struct_allocates_nothing() {
    let count = measure(small);
    eprintln!("small struct: {count} allocations in {ROUNDS} round trips");
    assert_eq!(
        count, 0,
        "{count} allocations in {ROUNDS} struct round trips"
    );
}

/// The same over pipes (courier-pipe): the frame reader copies a frame into
/// the channel's buffer, which keeps a few KiB of room (a frame that grows
/// by a byte does not reallocate), and the writer gathers small frames on
/// the stack.
#[test]
fn small_values_over_pipes_allocate_nothing() {
    fn over_pipes<T: Serialize + DeserializeOwned>() -> (Sender<T>, Receiver<T>) {
        let (a, b) = courier_pipe::pair().expect("pipes");
        let config = courier_channel::Config::new();
        (
            Sender::with_transport(Box::new(a), config),
            Receiver::with_transport(Box::new(b), config),
        )
    }
    let count = measure_over(over_pipes::<u64>, |i| i);
    eprintln!("u64 over pipes: {count} allocations in {ROUNDS} round trips");
    assert_eq!(
        count, 0,
        "{count} allocations in {ROUNDS} u64 round trips over pipes"
    );
    let count = measure_over(over_pipes::<Small>, small);
    assert_eq!(
        count, 0,
        "{count} allocations in {ROUNDS} struct round trips over pipes"
    );
}

/// A message carrying one fd.
#[derive(Serialize, Deserialize, Debug)]
struct WithFd {
    seq: u64,
    fd: Fd<OwnedFd>,
}

#[test]
fn report_one_fd() {
    const N: usize = 1_000;
    let _serial = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let (tx, rx) = channel::<WithFd>().expect("channel");
    let file = std::fs::File::open("/dev/null").expect("open /dev/null");
    let dup = || Fd::new(OwnedFd::from(file.try_clone().expect("dup")));
    let mut total = 0;
    for seq in 0..(WARM_UP + N) as u64 {
        let value = WithFd { seq, fd: dup() };
        let mut got = None;
        let count = allocations_in(|| got = Some(round_trip(&tx, &rx, value)));
        assert_eq!(got.expect("round trip").seq, seq, "fd message {seq}");
        if seq >= WARM_UP as u64 {
            total += count;
        }
    }
    let per = total as f64 / N as f64;
    eprintln!("one fd: {per:.2} allocations per message ({total} in {N})");
}

#[test]
fn report_one_mib_bytes() {
    const N: usize = 50;
    let _serial = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let (tx, rx) = channel::<Bytes>().expect("channel");
    let payload = Bytes::from(vec![0xa5; 1 << 20]);
    let mut total = 0;
    for i in 0..10 + N {
        let value = payload.clone();
        let mut got = None;
        let count = allocations_in(|| got = Some(round_trip(&tx, &rx, value)));
        assert!(got.as_ref() == Some(&payload), "1 MiB payload {i} intact");
        if i >= 10 {
            total += count;
        }
    }
    let per = total as f64 / N as f64;
    eprintln!("1 MiB Bytes: {per:.2} allocations per message ({total} in {N})");
}
