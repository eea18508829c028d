//! Request/response over an [`Endpoint`]: a [`Client`] that many threads
//! call through at once, and [`Endpoint::serve`], a loop over a handler.
//!
//! On the wire a request is a [`Call`], `(id, request)`, and a response a
//! [`Reply`], `(id, Ok(response) | Err(error))`: the handler's error
//! travels as a typed value, and responses are matched to calls by id, so
//! calls from several threads can be in flight at once and a server may
//! answer in any order.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{
    ChannelError, Endpoint, Receiver, RecvError, RecvTimeoutError, SendError, SendTimeoutError,
    Sender,
};

/// A request on the wire: the call's id and the request.
pub type Call<Q> = (u64, Q);
/// A response on the wire: the id of the call it answers and the handler's
/// result.
pub type Reply<P, E> = (u64, Result<P, E>);

/// Why a [`Client::call`] returned no response.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum CallError<Q, E> {
    /// The request could not be sent; it comes back, with its fds.
    #[error("the request was not sent")]
    NotSent(#[source] SendTimeoutError<Q>),
    /// The handler answered with an error.
    #[error("the server's handler returned an error")]
    Remote(E),
    /// No response arrived in time. A response arriving later is dropped.
    #[error("no response within the timeout")]
    Timeout,
    /// The server went away before answering.
    #[error("the server disconnected before answering")]
    Disconnected,
    /// A response frame could not be received or decoded; the call it
    /// belonged to cannot be known, so it is reported to the call that was
    /// reading.
    #[error("receiving the response failed")]
    Failed(#[source] ChannelError),
}

impl<Q, E: fmt::Debug> fmt::Debug for CallError<Q, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::NotSent(e) => f.debug_tuple("NotSent").field(e).finish(),
            CallError::Remote(e) => f.debug_tuple("Remote").field(e).finish(),
            CallError::Timeout => f.write_str("Timeout"),
            CallError::Disconnected => f.write_str("Disconnected"),
            CallError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

/// The calling side of a request/response protocol: `Sync`, so one client
/// serves many threads, each with its own calls in flight.
///
/// There is no background thread: a waiting caller reads the responses
/// and hands each to the caller it belongs to.
///
/// ```
/// use std::time::Duration;
/// use courier_channel::{endpoints, Client};
///
/// let (client, server) = endpoints()?;
/// std::thread::spawn(move || {
///     server.serve(|n: u32| n.checked_mul(2).ok_or_else(|| "overflow".to_string())).unwrap();
/// });
/// let client = Client::<u32, u32, String>::new(client);
/// assert_eq!(client.call(21, Duration::from_secs(5)).unwrap(), 42);
/// assert!(client.call(u32::MAX, Duration::from_secs(5)).is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Client<Q, P, E> {
    tx: Sender<Call<Q>>,
    state: Mutex<State<P, E>>,
    arrived: Condvar,
    next_id: AtomicU64,
}

struct State<P, E> {
    /// `None` while a caller is reading from it.
    rx: Option<Receiver<Reply<P, E>>>,
    /// Calls in flight, and their responses once they arrive.
    waiting: HashMap<u64, Option<Result<P, E>>>,
    disconnected: bool,
}

impl<Q, P, E> Client<Q, P, E>
where
    Q: Serialize,
    P: DeserializeOwned,
    E: DeserializeOwned,
{
    /// A client over an endpoint whose other end runs
    /// [`serve`](Endpoint::serve).
    pub fn new(endpoint: Endpoint<Call<Q>, Reply<P, E>>) -> Self {
        let (tx, rx) = endpoint.split();
        Client {
            tx,
            state: Mutex::new(State {
                rx: Some(rx),
                waiting: HashMap::new(),
                disconnected: false,
            }),
            arrived: Condvar::new(),
            next_id: AtomicU64::new(0),
        }
    }

    /// Sends `request` and waits at most `timeout` (sending included) for
    /// its response.
    ///
    /// # Errors
    ///
    /// [`CallError::Remote`] with the handler's error; the others for
    /// what kept the response from arriving.
    pub fn call(&self, request: Q, timeout: Duration) -> Result<P, CallError<Q, E>> {
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().waiting.insert(id, None);
        if let Err(e) = self.tx.send_deadline((id, request), deadline) {
            self.lock().waiting.remove(&id);
            return Err(CallError::NotSent(unwrap_call(e)));
        }
        let mut state = self.lock();
        loop {
            if let Some(Some(result)) = state.waiting.get_mut(&id).map(Option::take) {
                state.waiting.remove(&id);
                return result.map_err(CallError::Remote);
            }
            if state.disconnected {
                state.waiting.remove(&id);
                return Err(CallError::Disconnected);
            }
            // Checked here, not only by the receive: a receive returns
            // at once while others' replies keep arriving.
            if Instant::now() >= deadline {
                state.waiting.remove(&id);
                return Err(CallError::Timeout);
            }
            if let Some(rx) = state.rx.take() {
                // This caller reads; the others wait for it to hand over.
                drop(state);
                let got = rx.recv_deadline(deadline);
                state = self.lock();
                state.rx = Some(rx);
                self.arrived.notify_all();
                match got {
                    Ok((reply_id, result)) => {
                        // A reply for a call that gave up is dropped here.
                        if let Some(slot) = state.waiting.get_mut(&reply_id) {
                            *slot = Some(result);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        state.waiting.remove(&id);
                        return Err(CallError::Timeout);
                    }
                    Err(RecvTimeoutError::Disconnected) => state.disconnected = true,
                    Err(RecvTimeoutError::Failed(e)) => {
                        state.waiting.remove(&id);
                        return Err(CallError::Failed(e));
                    }
                }
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    state.waiting.remove(&id);
                    return Err(CallError::Timeout);
                }
                state = self
                    .arrived
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<P, E>> {
        // The state stays consistent across a panic in another caller:
        // every change to it is a single insert, remove or assignment.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn unwrap_call<Q>(e: SendTimeoutError<Call<Q>>) -> SendTimeoutError<Q> {
    match e {
        SendTimeoutError::Timeout((_, q)) => SendTimeoutError::Timeout(q),
        SendTimeoutError::Disconnected((_, q)) => SendTimeoutError::Disconnected(q),
        SendTimeoutError::Failed((_, q), e) => SendTimeoutError::Failed(q, e),
    }
}

impl<Q, P, E> fmt::Debug for Client<Q, P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("tx", &self.tx)
            .finish_non_exhaustive()
    }
}

/// What a [`serve`](Endpoint::serve) loop did before the client went away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Served {
    /// Requests answered.
    pub calls: u64,
    /// Frames that were not a valid request: discarded with their fds
    /// closed, unanswered (they carry no id to answer).
    pub refused: u64,
}

impl<Q, P, E> Endpoint<Reply<P, E>, Call<Q>>
where
    Q: DeserializeOwned,
    P: Serialize,
    E: Serialize,
{
    /// Serves requests until the client goes away: each request is passed
    /// to `handler`, and what it returns, `Ok` or `Err`, is sent back as
    /// the response. Invalid frames are counted and skipped.
    ///
    /// # Errors
    ///
    /// When a response cannot be sent for another reason than the client's
    /// departure (too large, too many fds, transport failure), or the
    /// socket itself fails. A bad frame, however bad, is only counted.
    pub fn serve<F>(&self, mut handler: F) -> Result<Served, ChannelError>
    where
        F: FnMut(Q) -> Result<P, E>,
    {
        let mut served = Served::default();
        loop {
            let (id, request) = match self.recv() {
                Ok(call) => call,
                Err(RecvError::Disconnected) => return Ok(served),
                // A failure of the socket itself, not of one message.
                Err(RecvError::Failed(ChannelError::Io(e)))
                    if e.kind() != std::io::ErrorKind::InvalidData =>
                {
                    return Err(ChannelError::Io(e))
                }
                Err(RecvError::Failed(_)) => {
                    served.refused += 1;
                    continue;
                }
            };
            match self.send((id, handler(request))) {
                Ok(()) => served.calls += 1,
                Err(SendError::Disconnected(_)) => return Ok(served),
                Err(SendError::Failed(_, e)) => return Err(e),
            }
        }
    }
}
