//! Channel ends inside messages: a [`Sender`], [`Receiver`] or
//! [`Endpoint`] serializes as its socket's fd and arrives working.
//!
//! On the wire: a `u8` transport kind (1 = SEQPACKET, 2 = DGRAM) and the
//! `u32` index of the socket in the message's fd table. The arriving end
//! gets this process's default [`Config`] with the same transport kind: a
//! peer cannot choose the limits of a receiver it hands over.

use std::os::fd::AsFd;
use std::sync::Arc;

use courier_transport::{DatagramSocket, SeqPacketSocket};
use serde::de::{self, DeserializeOwned};
use serde::ser::{self, SerializeTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{Link, Shared};
use crate::fd::FdType;
use crate::{as_fd, Config, Endpoint, Receiver, Sender};

const SEQPACKET: u8 = 1;
const DATAGRAM: u8 = 2;

fn serialize_link<S: Serializer>(shared: &Shared, s: S) -> Result<S::Ok, S::Error> {
    let (kind, fd) = match &shared.link {
        Link::SeqPacket(sock) => (SEQPACKET, sock.as_fd()),
        Link::Datagram(sock) => (DATAGRAM, sock.as_fd()),
        Link::Other(_) => {
            return Err(ser::Error::custom(
                "a channel over this transport cannot travel in a message",
            ))
        }
    };
    let index = crate::fdtable::push(fd).map_err(ser::Error::custom)?;
    // From here on another process may own this socket: dropping the local
    // end must not shut it down. (Kept even if the send then fails: the
    // end merely loses its shutdown on drop, and closes normally.)
    shared.mark_travelled();
    let mut t = s.serialize_tuple(2)?;
    t.serialize_element(&kind)?;
    t.serialize_element(&index)?;
    t.end()
}

/// Reads what `serialize_link` wrote, reusing `as_fd`'s checked take.
fn deserialize_shared<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Shared>, D::Error> {
    struct Wire(u8, IndexedFd);
    struct IndexedFd(std::os::fd::OwnedFd);
    impl<'de> Deserialize<'de> for IndexedFd {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            as_fd::deserialize::<std::os::fd::OwnedFd, D>(d).map(IndexedFd)
        }
    }
    impl<'de> Deserialize<'de> for Wire {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let (kind, fd) = <(u8, IndexedFd)>::deserialize(d)?;
            Ok(Wire(kind, fd))
        }
    }
    let Wire(kind, IndexedFd(fd)) = Wire::deserialize(d)?;
    let refuse = |reason: String| {
        crate::fdtable::refuse(reason);
        de::Error::custom("channel refused")
    };
    let link = match kind {
        SEQPACKET => Link::SeqPacket(<SeqPacketSocket as FdType>::from_fd(fd).map_err(refuse)?),
        DATAGRAM => Link::Datagram(<DatagramSocket as FdType>::from_fd(fd).map_err(refuse)?),
        other => return Err(refuse(format!("unknown channel transport kind {other}"))),
    };
    let config = Config::default().datagram(kind == DATAGRAM);
    Ok(Shared::new(link, config))
}

impl<T> Serialize for Sender<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_link(&self.shared, s)
    }
}

impl<'de, T: Serialize> Deserialize<'de> for Sender<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_shared(d).map(Sender::from_shared)
    }
}

impl<T> Serialize for Receiver<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_link(&self.shared, s)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Receiver<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_shared(d).map(Receiver::from_shared)
    }
}

impl<S: Serialize, R: DeserializeOwned> Serialize for Endpoint<S, R> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        let (tx, _) = self.halves();
        serialize_link(&tx.shared, s)
    }
}

impl<'de, S: Serialize, R: DeserializeOwned> Deserialize<'de> for Endpoint<S, R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_shared(d).map(Endpoint::from_shared)
    }
}
