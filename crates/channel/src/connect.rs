//! Setting up an [`Endpoint`] over a new connection: authorization and
//! the handshake.

use std::io;
use std::time::Instant;

use courier_transport::{Address, Credentials, FrameTransport, PidFd, SeqPacketSocket};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{Link, Shared};
use crate::handshake::{self, Hello};
use crate::{Authorize, Config, ConnectError, Endpoint};

impl<S: Serialize, R: DeserializeOwned> Endpoint<S, R> {
    /// Runs the handshake over a connected SEQPACKET socket (inherited,
    /// accepted, or from a pair) and returns the endpoint once both sides
    /// agree. The other end must call this too (or be set up by courier's
    /// listener, connect or spawn helpers, which do).
    ///
    /// ```
    /// use courier_channel::{Config, Endpoint};
    /// use courier_transport::SeqPacketSocket;
    ///
    /// let (a, b) = SeqPacketSocket::pair()?;
    /// let config = Config::new().protocol("echo", 1);
    /// let other = std::thread::spawn(move || Endpoint::<u32, u32>::handshake(b, config));
    /// let ours = Endpoint::<u32, u32>::handshake(a, config)?;
    /// let theirs = other.join().unwrap()?;
    /// assert_eq!(ours.peer().unwrap().protocol, "echo");
    /// ours.send(1).unwrap();
    /// assert_eq!(theirs.recv().unwrap(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A mismatch of wire format or protocol (the error shows both sides'
    /// values), a peer that does not speak the handshake, closes or stalls
    /// past [`Config::handshake_timeout`].
    pub fn handshake(socket: SeqPacketSocket, config: Config) -> Result<Self, ConnectError> {
        let deadline = deadline(&config);
        Self::handshake_until(Link::SeqPacket(socket), config, deadline)
    }

    /// [`handshake`](Self::handshake) over any bidirectional
    /// [`FrameTransport`] (a pipe pair, a stream).
    ///
    /// # Errors
    ///
    /// As [`handshake`](Self::handshake).
    pub fn handshake_transport(
        transport: Box<dyn FrameTransport>,
        config: Config,
    ) -> Result<Self, ConnectError> {
        let deadline = deadline(&config);
        Self::handshake_until(Link::Other(transport), config, deadline)
    }

    pub(crate) fn handshake_until(
        link: Link,
        config: Config,
        deadline: Instant,
    ) -> Result<Self, ConnectError> {
        if !config.accepts_fds() {
            if let Link::SeqPacket(socket) = &link {
                // Where the kernel cannot refuse them, the receive path
                // closes whatever arrives.
                socket.set_pass_rights(false)?;
            }
        }
        let hello = handshake::exchange(link.transport(), &config, deadline)?;
        Ok(Self::from_shared(Shared::handshaken(
            link,
            config,
            Some(hello),
        )))
    }

    /// Connects to a courier listener at `addr`, checks that the listening
    /// process runs as this user ([`Authorize::same_user`]: an abstract
    /// name can be taken by anyone) and runs the handshake; the whole of it
    /// bounded by [`Config::handshake_timeout`].
    ///
    /// # Errors
    ///
    /// [`ConnectError::Io`] when nothing listens there; the errors of
    /// [`handshake`](Self::handshake) and [`ConnectError::Unauthorized`].
    pub fn connect(addr: &Address, config: Config) -> Result<Self, ConnectError> {
        Self::connect_with(addr, config, &Authorize::same_user())
    }

    /// [`connect`](Self::connect), trusting the listening process when
    /// `authorize` allows its credentials.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub fn connect_with(
        addr: &Address,
        config: Config,
        authorize: &Authorize,
    ) -> Result<Self, ConnectError> {
        let deadline = deadline(&config);
        let socket = SeqPacketSocket::connect_deadline(addr, deadline).map_err(|e| {
            if e.kind() == io::ErrorKind::TimedOut {
                ConnectError::Timeout {
                    after: config.get_handshake_timeout(),
                }
            } else {
                ConnectError::Io(e)
            }
        })?;
        check_peer(&socket, authorize)?;
        Self::handshake_until(Link::SeqPacket(socket), config, deadline)
    }

    /// What the peer announced in the handshake. For a pair made by
    /// [`Config::endpoints`], the pair's own settings; `None` for an
    /// endpoint made without either ([`from_socket`](Self::from_socket),
    /// or one that arrived in a message).
    pub fn peer(&self) -> Option<&Hello> {
        self.halves().0.shared.peer.as_ref()
    }

    /// The peer process's credentials as the kernel recorded them at
    /// connect time (`SO_PEERCRED`). For a socketpair made before a spawn,
    /// that is the process that made the pair, not the child.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] over a transport other than a socket.
    pub fn peer_cred(&self) -> io::Result<Credentials> {
        match &self.halves().0.shared.link {
            Link::SeqPacket(s) => s.peer_cred(),
            Link::Datagram(s) => s.peer_cred(),
            Link::Other(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    /// A pidfd for the peer process, to wait for its death
    /// (`SO_PEERPIDFD`); `Ok(None)` where the kernel lacks it. Same caveat
    /// as [`peer_cred`](Self::peer_cred) for pairs.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] over a transport other than a
    /// SEQPACKET socket; the kernel's.
    pub fn peer_pidfd(&self) -> io::Result<Option<PidFd>> {
        match &self.halves().0.shared.link {
            Link::SeqPacket(s) => s.peer_pidfd(),
            _ => Err(io::ErrorKind::Unsupported.into()),
        }
    }
}

pub(crate) fn deadline(config: &Config) -> Instant {
    // A timeout too large to represent: a day is forever enough.
    Instant::now()
        .checked_add(config.get_handshake_timeout())
        .unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(86_400))
}

/// Refuses a peer whose credentials `authorize` does not allow.
pub(crate) fn check_peer(
    socket: &SeqPacketSocket,
    authorize: &Authorize,
) -> Result<Credentials, ConnectError> {
    let credentials = socket.peer_cred()?;
    if authorize.allows(&credentials) {
        Ok(credentials)
    } else {
        Err(ConnectError::Unauthorized { credentials })
    }
}
