//! [`Listener`]: a rendezvous for processes courier did not spawn.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use courier_transport::{AbstractName, Address, BindOptions, Wait};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::Link;
use crate::connect::{check_peer, deadline};
use crate::{Authorize, Config, ConnectError, Endpoint};

/// Listens on a path or an abstract name and turns each connecting process
/// into a typed [`Endpoint`], after checking who it is and running the
/// handshake.
///
/// For each connection, in order: the peer's credentials (`SO_PEERCRED`)
/// are checked against [`Authorize`] (by default, the same uid) before
/// anything is read; then the handshake must complete within
/// [`Config::handshake_timeout`]. A peer that fails either is closed,
/// counted ([`rejected`](Self::rejected), [`failed`](Self::failed)) and
/// reported as the `Err` of that accept; the listener stays usable, so
/// serve loops keep going past such errors.
///
/// A stalled peer holds up [`accept`](Self::accept) for at most the
/// handshake timeout; a host that must not wait that long hands accepted
/// connections to other threads, or lowers the timeout.
///
/// ```
/// use courier_channel::{Config, Endpoint, Listener};
/// use courier_transport::{AbstractName, Address};
///
/// let addr = Address::from(AbstractName::random()?);
/// let config = Config::new().protocol("greeter", 1);
/// let listener = Listener::<String, String>::bind(&addr, config)?;
/// let client = std::thread::spawn(move || {
///     let ep = Endpoint::<String, String>::connect(&addr, config).unwrap();
///     ep.send("ada".into()).unwrap();
///     ep.recv().unwrap()
/// });
/// let server = listener.accept()?;
/// let name = server.recv()?;
/// server.send(format!("hello, {name}")).unwrap();
/// assert_eq!(client.join().unwrap(), "hello, ada");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Listener<S, R> {
    inner: courier_transport::Listener,
    config: Config,
    authorize: Authorize,
    rejected: AtomicU64,
    failed: AtomicU64,
    kind: PhantomData<fn(S) -> R>,
}

impl<S: Serialize, R: DeserializeOwned> Listener<S, R> {
    /// Listens on `addr`: a path socket is made mode 0600, in directories
    /// created mode 0700 when missing, and all of it removed on drop.
    ///
    /// # Errors
    ///
    /// As [`courier_transport::Listener::bind`].
    pub fn bind(addr: &Address, config: Config) -> io::Result<Self> {
        Self::bind_with(addr, config, &BindOptions::default())
    }

    /// Listens on a new random abstract name ([`AbstractName::random`]:
    /// 128 bits, unguessable); [`local_addr`](Self::local_addr) tells it.
    ///
    /// # Errors
    ///
    /// When the random source or the bind fails.
    pub fn bind_random(config: Config) -> io::Result<Self> {
        Self::bind(&Address::from(AbstractName::random()?), config)
    }

    /// Listens on `addr` with `options` (file mode, backlog).
    ///
    /// # Errors
    ///
    /// As [`courier_transport::Listener::bind`].
    pub fn bind_with(addr: &Address, config: Config, options: &BindOptions) -> io::Result<Self> {
        Ok(Self::from_listener(
            courier_transport::Listener::bind_with(addr, options)?,
            config,
        ))
    }

    /// Wraps a listening socket made elsewhere.
    pub fn from_listener(inner: courier_transport::Listener, config: Config) -> Self {
        Listener {
            inner,
            config,
            authorize: Authorize::same_user(),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            kind: PhantomData,
        }
    }

    /// Accepts the peers `authorize` allows, instead of only this user's.
    pub fn authorize(self, authorize: Authorize) -> Self {
        Listener { authorize, ..self }
    }

    /// Waits for the next connection and sets it up.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Unauthorized`] for a refused peer; the handshake's
    /// errors for one that fails it; [`ConnectError::Io`] when accepting
    /// fails. Each concerns one connection only.
    pub fn accept(&self) -> Result<Endpoint<S, R>, ConnectError> {
        self.accept_wait(Wait::Block)
    }

    /// Like [`accept`](Self::accept), but gives up when no peer connects
    /// within `timeout`, with [`ConnectError::Io`] of kind
    /// [`io::ErrorKind::TimedOut`]. A peer that connected in time still has
    /// the full handshake timeout.
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept).
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Endpoint<S, R>, ConnectError> {
        self.accept_wait(Wait::timeout(timeout))
    }

    /// Like [`accept_timeout`](Self::accept_timeout), until `deadline`.
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept).
    pub fn accept_deadline(&self, deadline: Instant) -> Result<Endpoint<S, R>, ConnectError> {
        self.accept_wait(Wait::Until(deadline))
    }

    fn accept_wait(&self, wait: Wait) -> Result<Endpoint<S, R>, ConnectError> {
        let socket = self.inner.accept_wait(wait)?;
        let handshake_deadline = deadline(&self.config);
        if let Err(e) = check_peer(&socket, &self.authorize) {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        Endpoint::handshake_until(Link::SeqPacket(socket), self.config, handshake_deadline)
            .inspect_err(|_| {
                self.failed.fetch_add(1, Ordering::Relaxed);
            })
    }

    /// An endless iterator over connections, each set up or the error of
    /// its failure.
    pub fn incoming(&self) -> impl Iterator<Item = Result<Endpoint<S, R>, ConnectError>> + '_ {
        std::iter::repeat_with(move || self.accept())
    }

    /// How many peers the authorization check refused.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// How many authorized peers failed the handshake.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The address listened on.
    ///
    /// # Errors
    ///
    /// The kernel's.
    pub fn local_addr(&self) -> io::Result<Address> {
        self.inner.local_addr()
    }

    /// The settings each accepted endpoint gets.
    pub fn config(&self) -> Config {
        self.config
    }
}

impl<S, R> AsFd for Listener<S, R> {
    /// The listening socket, to poll for incoming connections.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl<S, R> fmt::Debug for Listener<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("inner", &self.inner)
            .field("authorize", &self.authorize)
            .field("rejected", &self.rejected)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}
