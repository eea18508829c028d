//! What only datagram sockets do: bind without listening, and send to or
//! receive from any address.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::AsFd;

use nix::libc;

use crate::bind;
use crate::kind::{Datagram, Kind};
use crate::{sys, Address, BindOptions, DatagramSocket, Received, RecvMsg, SendMsg, Wait};

impl DatagramSocket {
    /// An unbound datagram socket, for sending to bound ones. Receivers see
    /// its messages as from [`Address::Unnamed`].
    ///
    /// # Errors
    ///
    /// The kernel's.
    pub fn unbound() -> io::Result<Self> {
        Ok(Self::from_fd(sys::socket(Datagram::sock_type(), false)?))
    }

    /// A datagram socket bound to `addr` with the default [`BindOptions`]:
    /// it receives what anyone allowed sends there.
    ///
    /// ```
    /// use courier_transport::{AbstractName, Address, DatagramSocket};
    ///
    /// let addr = Address::from(AbstractName::random()?);
    /// let server = DatagramSocket::bind(&addr)?;
    /// let client = DatagramSocket::unbound()?;
    /// client.send_to(b"ping", &addr)?;
    /// let mut buf = [0; 8];
    /// let (n, from) = server.recv_from(&mut buf)?;
    /// assert_eq!((&buf[..n], from), (&b"ping"[..], Address::Unnamed));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Listener::bind`](crate::Listener::bind).
    pub fn bind(addr: &Address) -> io::Result<Self> {
        Self::bind_with(addr, &BindOptions::default())
    }

    /// A datagram socket bound to `addr` with `opts` (the backlog is
    /// ignored).
    ///
    /// # Errors
    ///
    /// As [`Listener::bind`](crate::Listener::bind).
    pub fn bind_with(addr: &Address, opts: &BindOptions) -> io::Result<Self> {
        let fd = sys::socket(Datagram::sock_type(), false)?;
        let path = bind::bind(fd.as_fd(), Datagram::sock_type(), addr, opts)?;
        Ok(Self::with_path(fd, path))
    }

    /// Sends `buf` as one datagram to `to`, blocking while the receiver's
    /// queue is full.
    ///
    /// # Errors
    ///
    /// As [`send`](crate::Socket::send); `ECONNREFUSED` when nothing is
    /// bound at `to`; `EISCONN` on a connected socket.
    pub fn send_to(&self, buf: &[u8], to: &Address) -> io::Result<usize> {
        self.send_msg_to_addr(&SendMsg::new(&[IoSlice::new(buf)]), to, Wait::Block)
    }

    /// Sends one message (vectored, with fds) to `to` under `wait`.
    ///
    /// # Errors
    ///
    /// As [`send_to`](Self::send_to) and
    /// [`send_with_fds`](crate::Socket::send_with_fds).
    pub fn send_msg_to_addr(
        &self,
        msg: &SendMsg<'_>,
        to: &Address,
        wait: Wait,
    ) -> io::Result<usize> {
        let to = to.to_sockaddr()?;
        self.send_msg_to(msg, Some(&to), wait)
    }

    /// Receives one datagram and the address it came from, blocking.
    ///
    /// # Errors
    ///
    /// As [`recv`](crate::Socket::recv).
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Address)> {
        let mut fds = Vec::new();
        let mut msg = RecvMsg {
            bufs: &mut [IoSliceMut::new(buf)],
            fds: &mut fds,
            max_fds: 0,
        };
        let (got, from) = self.recv_msg_from_addr(&mut msg, Wait::Block)?;
        Ok((got.len, from))
    }

    /// Receives one message (scattered, with fds) and the sender's address
    /// under `wait`.
    ///
    /// # Errors
    ///
    /// As [`recv_msg`](crate::Socket::recv_msg).
    pub fn recv_msg_from_addr(
        &self,
        msg: &mut RecvMsg<'_, '_>,
        wait: Wait,
    ) -> io::Result<(Received, Address)> {
        let mut name = libc::sockaddr_un {
            sun_family: 0,
            sun_path: [0; 108],
        };
        let (got, name_len) = self.recv_msg_from(msg, Some(&mut name), wait)?;
        Ok((got, Address::from_raw(&name, name_len)))
    }
}
