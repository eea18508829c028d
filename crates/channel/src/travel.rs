//! Channel ends inside messages: a [`Sender`], [`Receiver`] or
//! [`Endpoint`] serializes as its socket's fd and arrives working.
//!
//! On the wire: a `u8` transport kind (1 = SEQPACKET, 2 = DGRAM), the `u32`
//! index of the socket in the message's fd table, and the shared rings the
//! receiving side has mapped, as a sequence of (`u64` ring id, `u32` fd
//! index): frames already queued may name them, and the end's new process
//! must be able to read those. A sender carries no rings (in its new
//! process it makes its own). The arriving end gets this process's default
//! [`Config`] with the same transport kind: a peer cannot choose the limits
//! of a receiver it hands over.
//!
//! A receiving end must stay in one process: frames naming a ring reach
//! whichever process reads them, and only the one that mapped it can.
//!
//! An end that arrived in a message closes its socket when dropped but does
//! not shut it down: copies may live in other processes (a sender handed to
//! several children), and a shutdown would end the channel for all of them.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use courier_transport::{DatagramSocket, SeqPacketSocket};
use serde::de::{self, DeserializeOwned};
use serde::ser::{self, SerializeTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{Link, RecvState, Shared};
use crate::fd::FdType;
use crate::large::RingSet;
use crate::ring::RingRx;
use crate::{as_fd, Config, Endpoint, Receiver, Sender};

const SEQPACKET: u8 = 1;
const DATAGRAM: u8 = 2;

fn serialize_link<S: Serializer>(
    shared: &Shared,
    rings: Option<&RingSet>,
    s: S,
) -> Result<S::Ok, S::Error> {
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
    let mut ring_fds = Vec::new();
    for (id, fd) in rings.into_iter().flat_map(RingSet::rings) {
        ring_fds.push((id, crate::fdtable::push(fd).map_err(ser::Error::custom)?));
    }
    // From here on another process may own this socket: dropping the local
    // end must not shut it down. (Kept even if the send then fails: the
    // end merely loses its shutdown on drop, and closes normally.)
    shared.mark_travelled();
    let mut t = s.serialize_tuple(3)?;
    t.serialize_element(&kind)?;
    t.serialize_element(&index)?;
    t.serialize_element(&ring_fds)?;
    t.end()
}

/// The state of a receiving side that arrived with `rings`.
fn recv_state(rings: Vec<RingRx>) -> RecvState {
    let mut state = RecvState::default();
    for ring in rings {
        state.rings.insert(ring);
    }
    state
}

/// A receiving side's rings, for its serialization; an error while the
/// receiver is busy receiving (a value cannot hold a receiver it is being
/// received by).
fn rings_of<E: ser::Error>(
    state: &std::cell::RefCell<RecvState>,
) -> Result<std::cell::Ref<'_, RecvState>, E> {
    state
        .try_borrow()
        .map_err(|_| E::custom("a receiver cannot travel while it is receiving"))
}

/// Reads what `serialize_link` wrote, reusing `as_fd`'s checked take.
fn deserialize_shared<'de, D: Deserializer<'de>>(
    d: D,
    receives: bool,
) -> Result<(Arc<Shared>, Vec<RingRx>), D::Error> {
    struct Wire(u8, IndexedFd, Vec<(u64, IndexedFd)>);
    struct IndexedFd(OwnedFd);
    impl<'de> Deserialize<'de> for IndexedFd {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            as_fd::deserialize::<OwnedFd, D>(d).map(IndexedFd)
        }
    }
    impl<'de> Deserialize<'de> for Wire {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let (kind, fd, rings) = <(u8, IndexedFd, Vec<(u64, IndexedFd)>)>::deserialize(d)?;
            Ok(Wire(kind, fd, rings))
        }
    }
    let Wire(kind, IndexedFd(fd), ring_fds) = Wire::deserialize(d)?;
    let refuse = |reason: String| {
        crate::fdtable::refuse(reason);
        de::Error::custom("channel refused")
    };
    let mut rings = Vec::with_capacity(ring_fds.len());
    // A sender carries no rings: any that come with one are closed unmapped.
    for (id, IndexedFd(fd)) in ring_fds.into_iter().filter(|_| receives) {
        rings.push(RingRx::adopt(fd, id, true).map_err(|e| refuse(e.to_string()))?);
    }
    let link = match kind {
        SEQPACKET => Link::SeqPacket(<SeqPacketSocket as FdType>::from_fd(fd).map_err(refuse)?),
        DATAGRAM => Link::Datagram(<DatagramSocket as FdType>::from_fd(fd).map_err(refuse)?),
        other => return Err(refuse(format!("unknown channel transport kind {other}"))),
    };
    let config = Config::default().datagram(kind == DATAGRAM);
    let shared = Shared::new(link, config);
    // Other processes may hold this socket too (the sender may have sent
    // copies to several): dropping the end that arrived must not shut it
    // down for them. End of stream then comes when the last copy closes.
    shared.mark_travelled();
    Ok((shared, rings))
}

impl<T> Serialize for Sender<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_link(&self.shared, None, s)
    }
}

impl<'de, T: Serialize> Deserialize<'de> for Sender<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Rings only come with receivers; any sent with a sender close here.
        deserialize_shared(d, false).map(|(shared, _)| Sender::from_shared(shared))
    }
}

impl<T> Serialize for Receiver<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let state = rings_of(&self.state)?;
        serialize_link(&self.shared, Some(&state.rings), s)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Receiver<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (shared, rings) = deserialize_shared(d, true)?;
        Ok(Receiver::from_parts(shared, recv_state(rings)))
    }
}

impl<S: Serialize, R: DeserializeOwned> Serialize for Endpoint<S, R> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        let (tx, rx) = self.halves();
        let state = rings_of(&rx.state)?;
        serialize_link(&tx.shared, Some(&state.rings), s)
    }
}

impl<'de, S: Serialize, R: DeserializeOwned> Deserialize<'de> for Endpoint<S, R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (shared, rings) = deserialize_shared(d, true)?;
        Ok(Endpoint::from_parts(shared, recv_state(rings)))
    }
}
