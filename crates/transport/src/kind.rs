//! The socket kinds courier speaks: `SOCK_SEQPACKET` and `SOCK_DGRAM`.

use nix::sys::socket::SockType;

mod sealed {
    pub trait Sealed {}
}

/// A socket type, as a type parameter of [`Socket`](crate::Socket).
///
/// Sealed: the implementations are [`SeqPacket`] and [`Datagram`].
pub trait Kind: sealed::Sealed + Send + Sync + 'static {
    /// The type's name, as in `SOCK_SEQPACKET`.
    const NAME: &'static str;
    /// The raw `SO_TYPE` value.
    const RAW_TYPE: i32;
    /// Whether the type has end-of-stream (a zero-length read after the peer
    /// closed or shut down), which also makes zero-length messages unsendable.
    const HAS_EOF: bool;

    /// The nix form of the type.
    #[doc(hidden)]
    fn sock_type() -> SockType;
}

/// `SOCK_SEQPACKET`: connection-oriented, reliable, ordered, message
/// boundaries kept, end-of-stream when the peer goes.
#[derive(Debug)]
pub enum SeqPacket {}

/// `SOCK_DGRAM`: message boundaries kept and, for AF_UNIX, reliable and
/// ordered; no connection state, so no end-of-stream when the peer goes.
#[derive(Debug)]
pub enum Datagram {}

impl sealed::Sealed for SeqPacket {}
impl sealed::Sealed for Datagram {}

impl Kind for SeqPacket {
    const NAME: &'static str = "SOCK_SEQPACKET";
    const RAW_TYPE: i32 = nix::libc::SOCK_SEQPACKET;
    const HAS_EOF: bool = true;
    fn sock_type() -> SockType {
        SockType::SeqPacket
    }
}

impl Kind for Datagram {
    const NAME: &'static str = "SOCK_DGRAM";
    const RAW_TYPE: i32 = nix::libc::SOCK_DGRAM;
    const HAS_EOF: bool = false;
    fn sock_type() -> SockType {
        SockType::Datagram
    }
}
