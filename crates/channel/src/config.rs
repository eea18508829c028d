//! [`Config`]: how a channel is made and what its handshake announces.

use std::io;
use std::time::Duration;

use courier_transport::{DatagramSocket, SeqPacketSocket};
use serde::de::DeserializeOwned;
use serde::Serialize;

use std::sync::Arc;

use crate::codec::{Link, Shared};
use crate::handshake::Hello;
use crate::wire::{HEADER_LEN, MAX_INLINE_FRAME};
use crate::{Endpoint, Receiver, Sender};

/// How a channel is made: its transport, message limit and inline
/// threshold.
///
/// ```
/// use courier_channel::Config;
///
/// let (tx, rx) = Config::new().limit(1 << 20).channel::<String>()?;
/// tx.send("small".to_string()).unwrap();
/// assert_eq!(rx.recv().unwrap(), "small");
/// assert!(tx.send("x".repeat(2 << 20)).is_err()); // above the limit, handed back
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    limit: usize,
    inline_threshold: usize,
    ring: usize,
    datagram: bool,
    accept_fds: bool,
    protocol: &'static str,
    protocol_version: u32,
    handshake_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limit: Config::DEFAULT_LIMIT,
            inline_threshold: Config::DEFAULT_INLINE_THRESHOLD,
            ring: Config::DEFAULT_RING,
            datagram: false,
            accept_fds: true,
            protocol: "",
            protocol_version: 0,
            handshake_timeout: Config::DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

impl Config {
    /// The default message limit: 256 MiB of encoded value.
    pub const DEFAULT_LIMIT: usize = 256 << 20;
    /// Encoded values up to this size travel inside the frame; larger ones
    /// in a sealed memfd. Chosen from measurements, see the crate docs.
    pub const DEFAULT_INLINE_THRESHOLD: usize = 64 << 10;
    /// The default [`shared_ring`](Self::shared_ring) size cap: 64 MiB.
    pub const DEFAULT_RING: usize = crate::ring::MAX_RING;
    /// The largest inline threshold: what every receiver is ready for.
    pub const MAX_INLINE_THRESHOLD: usize = MAX_INLINE_FRAME - HEADER_LEN;
    /// How long a handshake may take by default before the peer is dropped.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

    /// SEQPACKET, [`DEFAULT_LIMIT`](Self::DEFAULT_LIMIT),
    /// [`DEFAULT_INLINE_THRESHOLD`](Self::DEFAULT_INLINE_THRESHOLD).
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest encoded value this end sends or accepts. A sender gets
    /// [`ChannelError::TooLarge`](crate::ChannelError::TooLarge) above it; a receiver refuses a frame that
    /// declares more before it maps or allocates anything.
    pub fn limit(self, limit: usize) -> Self {
        Config { limit, ..self }
    }

    /// The limit set.
    pub fn get_limit(&self) -> usize {
        self.limit
    }

    /// Encoded values larger than this go through shared memory (capped at
    /// [`MAX_INLINE_THRESHOLD`](Self::MAX_INLINE_THRESHOLD)). Values that
    /// encode to at most 496 bytes always travel inline, whatever the
    /// threshold: they are encoded on the stack, straight into the frame.
    pub fn inline_threshold(self, bytes: usize) -> Self {
        Config {
            inline_threshold: bytes.min(Self::MAX_INLINE_THRESHOLD),
            ..self
        }
    }

    /// The inline threshold set.
    pub fn get_inline_threshold(&self) -> usize {
        self.inline_threshold
    }

    /// The most memory a sending end's shared ring may use (at most, and by
    /// default, [`DEFAULT_RING`](Self::DEFAULT_RING)); 0, or anything below
    /// 4 KiB, turns the ring off.
    ///
    /// Over a socket, a value larger than the inline threshold is encoded
    /// straight into a shared memory ring that the sending end makes on
    /// its first such value and reuses; the frame only says where the body
    /// is, and the receiver decodes straight out of it. The ring is 4 MiB
    /// (or this cap, if smaller), its pages allocated once and kept while
    /// the sending end lives.
    ///
    /// A value whose encoding is over 2 MiB, that holds no fds and is sent
    /// by a blocking [`send`](crate::Sender::send), is *streamed*: its frame
    /// goes first, then the sender writes the body into the ring as the
    /// receiver frees room, wrapping around it as often as needed, while the
    /// receiver decodes it. A receive that takes such a frame waits for the
    /// rest of the body while its bytes keep coming (even a
    /// [`try_recv`](crate::Receiver::try_recv) or a receive past its
    /// deadline: the value is already on its way), and fails with
    /// [`FrameError::Stalled`](crate::FrameError::Stalled) when its sender
    /// makes no progress (a step: 1 MiB, a quarter of a smaller ring) for
    /// 2 s, or when the body takes longer than 2 s plus its length at
    /// 8 MiB/s. Over SEQPACKET, a body whose sender went mid-way is
    /// dropped instead (it was never sent); other transports cannot tell,
    /// and stall. A stream the receiver frees no room for within 100 ms
    /// (nobody is receiving, or the receiver is this same thread) is
    /// withdrawn, and the value goes in a memfd.
    ///
    /// Other large values go in one piece: the ring then grows to four
    /// times the largest of them (at least 4 MiB), up to this cap. Values
    /// larger than half the cap, and values sent while the ring is full for
    /// longer than a few milliseconds, travel in a sealed memfd of their
    /// own instead (slower: pages are allocated and mapped for each).
    ///
    /// Such a value is serialized more than once (attempts inline, a
    /// measure, then the encode into the ring, and after a withdrawn stream
    /// the encode into a memfd): `Serialize` impls must give the same
    /// output each time and should have no side effects. A ring
    /// whose sending process is killed stays mapped in the receiver (it
    /// cannot tell) until the receiver is dropped; a receiver keeps at most
    /// eight mapped, of at most eight times the largest ring a sender makes
    /// for its [`limit`](Self::limit) together (four times the limit
    /// rounded up to a power of two, between 4 MiB and 64 MiB: 512 MiB in
    /// all at the default limit), and reads further rings frame by frame.
    pub fn shared_ring(self, bytes: usize) -> Self {
        Config {
            ring: bytes.min(Self::DEFAULT_RING),
            ..self
        }
    }

    /// The shared ring cap set.
    pub fn get_shared_ring(&self) -> usize {
        self.ring
    }

    /// Use a `SOCK_DGRAM` socketpair instead of `SOCK_SEQPACKET`. A DGRAM
    /// receiver is never told that its senders are gone (the kernel gives no
    /// end of stream on DGRAM), so [`Receiver::recv`] would wait forever
    /// after they die: bound every receive with a timeout. Senders still
    /// learn that the receiver is gone.
    pub fn datagram(self, datagram: bool) -> Self {
        Config { datagram, ..self }
    }

    /// Whether DGRAM is used.
    pub fn is_datagram(&self) -> bool {
        self.datagram
    }

    /// Whether this end accepts fds in the values it receives (on by
    /// default). Turned off, the socket asks the kernel to refuse them
    /// (`SO_PASSRIGHTS`, Linux 6.16+), the handshake tells the peer so that
    /// its sends of values with fds fail at once with
    /// [`ChannelError::FdsRefused`](crate::ChannelError::FdsRefused), and any
    /// fd that still arrives is closed and its frame refused. Values then
    /// travel inline only, so the limit the peer sees is at most
    /// [`MAX_INLINE_THRESHOLD`](Self::MAX_INLINE_THRESHOLD).
    pub fn accept_fds(self, accept: bool) -> Self {
        Config {
            accept_fds: accept,
            ..self
        }
    }

    /// Whether fds are accepted.
    pub fn accepts_fds(&self) -> bool {
        self.accept_fds
    }

    /// The application protocol this end speaks, checked by the handshake:
    /// both ends of a connection must name the same protocol and version,
    /// or connecting fails with
    /// [`ConnectError::ProtocolMismatch`](crate::ConnectError::ProtocolMismatch)
    /// showing both. The name is at most 255 bytes. The default is the empty
    /// name, version 0.
    pub fn protocol(self, name: &'static str, version: u32) -> Self {
        Config {
            protocol: name,
            protocol_version: version,
            ..self
        }
    }

    /// The protocol name set.
    pub fn get_protocol(&self) -> &'static str {
        self.protocol
    }

    /// The protocol version set.
    pub fn get_protocol_version(&self) -> u32 {
        self.protocol_version
    }

    /// How long the handshake of a new connection may take, including the
    /// connect itself, before the peer is dropped with
    /// [`ConnectError::Timeout`](crate::ConnectError::Timeout).
    pub fn handshake_timeout(self, timeout: Duration) -> Self {
        Config {
            handshake_timeout: timeout,
            ..self
        }
    }

    /// The handshake timeout set.
    pub fn get_handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// A connected socketpair wrapped as two links.
    fn pair(&self) -> io::Result<(Link, Link)> {
        Ok(if self.datagram {
            let (a, b) = DatagramSocket::pair()?;
            (Link::Datagram(a), Link::Datagram(b))
        } else {
            let (a, b) = SeqPacketSocket::pair()?;
            (Link::SeqPacket(a), Link::SeqPacket(b))
        })
    }

    /// A new channel with these settings.
    ///
    /// # Errors
    ///
    /// When the socketpair cannot be made (out of fds, AF_UNIX forbidden).
    pub fn channel<T: Serialize + DeserializeOwned>(&self) -> io::Result<(Sender<T>, Receiver<T>)> {
        let (a, b) = self.pair()?;
        let (a, b) = self.paired(a, b);
        Ok((Sender::from_shared(a), Receiver::from_shared(b)))
    }

    /// Two connected bidirectional endpoints with these settings: the first
    /// sends `A` and receives `B`, the second the other way round.
    ///
    /// # Errors
    ///
    /// When the socketpair cannot be made.
    pub fn endpoints<A, B>(&self) -> io::Result<(Endpoint<A, B>, Endpoint<B, A>)>
    where
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
    {
        let (a, b) = self.pair()?;
        let (a, b) = self.paired(a, b);
        Ok((Endpoint::from_shared(a), Endpoint::from_shared(b)))
    }

    /// Both ends of a pair with these settings. Each knows the other's
    /// terms as if from a handshake, so sends the other end would refuse
    /// fail at once, typed.
    fn paired(&self, a: Link, b: Link) -> (Arc<Shared>, Arc<Shared>) {
        let terms = Hello::of(self, true);
        (
            Shared::handshaken(a, *self, Some(terms.clone())),
            Shared::handshaken(b, *self, Some(terms)),
        )
    }
}
