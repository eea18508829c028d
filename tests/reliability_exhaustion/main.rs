//! Reliability suite 6, resource exhaustion: every case ends in a typed
//! error or a documented wait, never in a leak or a hang.
//!
//! * **Receiver at its fd limit** (`receiver_at_its_fd_limit_...`): a child
//!   process, started under `ulimit -n 128`, queues values carrying fds
//!   (small ones, and large ones whose body travels in the sender's shared
//!   ring, a memfd sent along), then fills its fd table until exactly 3
//!   (later 0) slots are free and receives. The kernel installs what fits,
//!   closes the rest and sets `MSG_CTRUNC` (KERNEL-FACTS.md); the receive
//!   must fail with `RecvTimeoutError::Failed(ChannelError::Io(e))` where
//!   `TransportError::of(&e)` is `FdsTruncated { limit: 253, received }`,
//!   `received` being exactly the free slots, with the fd table back to what
//!   it was (the fds that did arrive closed). A value with fewer fds
//!   arrives at the same limit, and once slots are free again the values
//!   queued behind the refused ones arrive, in order, and a large value
//!   sent afterwards too (the ring is attached again). SEQPACKET and DGRAM.
//! * **Too many fds in flight** (`a_sender_with_too_many_fds_in_flight_...`):
//!   the kernel refuses a send with `ETOOMANYREFS` once the sending user has
//!   more fds in flight than its `RLIMIT_NOFILE`, unless it has
//!   `CAP_SYS_RESOURCE` or `CAP_SYS_ADMIN`. So a child under `ulimit -n 64`
//!   that, when run as root, drops to a uid of its own (200000 + its pid:
//!   the kernel counts fds in flight per user, and a uid shared with other
//!   processes, such as 65534, would make the count theirs too; the change
//!   of uid clears the capabilities) sends a value holding 8 fds into a
//!   channel nobody reads until the kernel refuses: `send`, `try_send` and
//!   `send_timeout` must fail at once with `Failed(value, ChannelError::Io)`
//!   of errno `ETOOMANYREFS` and hand the value back with the very same
//!   fds, still open; the raw transport reports the same errno; nothing
//!   leaks; once the receiver drains, sends work again. A child that keeps
//!   those capabilities says `skipped` (printed by the test).
//! * **Full receive queue** (`a_full_queue_...`): over SEQPACKET, DGRAM
//!   (`Config::datagram(true)`) and the pipe transport
//!   (`channel_over(Transport::Pipe, ..)`): `try_send` fills the queue
//!   until `Full`, which hands the value back (with its fd, on sockets);
//!   `send_timeout` returns `Timeout` with the value back after its timeout
//!   and within a bound; a blocking `send` waits (still waiting after
//!   100 ms) and wakes once the receiver drains, its value arriving last,
//!   after every queued one, in order.
//!
//! Each part is a module of its own ([`fd_limit`], [`in_flight`],
//! [`full_queue`]) with its test. Each test holds `common::fd_lock()` for
//! its whole run (they spawn processes and compare fd tables) and runs its
//! cases under a watchdog, so a hang fails the test instead of stalling
//! CI. Each prints one
//! `figures: suite=exhaustion part=...` line (`--nocapture` to see it):
//! cases, typed errors, leaks (0), hangs (0) and the outcome of each case.
//! There is no randomness here; the long version (`COURIER_SOAK=1`) repeats
//! the full-queue cycle more times.

#[path = "../../crates/transport/tests/common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

mod carrier;
mod fd_limit;
mod full_queue;
mod in_flight;

use std::sync::mpsc;
use std::time::Duration;

use support::panic_text;

// ---- roles --------------------------------------------------------------

/// Which channel the `fd_limit` role uses: `seqpacket` or `datagram`.
const KIND_ENV: &str = "COURIER_TEST_KIND";

const ROLES: &[(&str, fn())] = &[
    ("fd_limit", fd_limit::fd_limit),
    ("in_flight", in_flight::in_flight),
];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    common::run_role(ROLES)
}

// ---- the watchdog -------------------------------------------------------

/// Runs `f` in a thread and waits at most `limit` for it: a case that
/// hangs fails the test (naming it) instead of stalling the run. A panic
/// in `f` is passed on.
fn bounded<R: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (done, result) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = done.send(r);
        })
        .expect("spawn a case thread");
    match result.recv_timeout(limit) {
        Ok(Ok(r)) => {
            worker.join().expect("case thread");
            r
        }
        Ok(Err(panic)) => panic!("{what}: {}", panic_text(&*panic)),
        Err(_) => panic!("hang: {what} did not finish within {limit:?}"),
    }
}
