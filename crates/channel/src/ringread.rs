//! Decoding straight out of ring memory, one copy per byte.
//!
//! postcard reads through a "flavor". [`RingFlavor`] copies every byte it
//! hands out into memory of this process first (see
//! [`SharedBody`](crate::ring::SharedBody)), so nothing is validated in
//! place where the peer could change it afterwards.
//!
//! Byte buffers and strings (`Bytes`, `String`, ...) would cost a second
//! copy: postcard hands their visitor a borrowed slice, which it copies into
//! a new `Vec`. The [`Handoff`] avoids that. When the depth adapter sees
//! `deserialize_byte_buf` or `deserialize_string`, it raises `want`; the
//! flavor's next (and, in postcard, only) temporary read then copies the
//! ring bytes into a fresh `Vec` of exactly that length, parks it in the
//! handoff and returns an empty slice; [`Owned`] ignores that slice and
//! gives the visitor the parked `Vec` instead (`visit_byte_buf`, or
//! `visit_string` after UTF-8 validation of the private copy).

use std::cell::{Cell, OnceCell};
use std::fmt;

use postcard::de_flavors::Flavor;
use serde::de::{self, Visitor};

use crate::ring::SharedBody;

/// Passes an owned buffer from the flavor to the visitor (see the module
/// docs).
#[derive(Default)]
pub(crate) struct Handoff {
    want: Cell<bool>,
    owned: Cell<Option<Vec<u8>>>,
}

impl Handoff {
    /// Runs `read` (one `deserialize_byte_buf` or `deserialize_string`)
    /// with the owned path armed, and disarms it afterwards.
    pub(crate) fn armed<R>(&self, read: impl FnOnce() -> R) -> R {
        self.want.set(true);
        let result = read();
        self.want.set(false);
        self.owned.take();
        result
    }
}

/// A postcard input flavor over a ring body.
pub(crate) struct RingFlavor<'de> {
    body: SharedBody<'de>,
    pos: usize,
    /// Where temporary reads are copied.
    scratch: Vec<u8>,
    /// A private copy of the whole body, made the first time a type asks to
    /// borrow from the input (rare for owned values: `&str`-visiting
    /// impls).
    snapshot: &'de OnceCell<Box<[u8]>>,
    handoff: &'de Handoff,
}

impl<'de> RingFlavor<'de> {
    pub(crate) fn new(
        body: SharedBody<'de>,
        snapshot: &'de OnceCell<Box<[u8]>>,
        handoff: &'de Handoff,
    ) -> Self {
        RingFlavor {
            body,
            pos: 0,
            scratch: Vec::new(),
            snapshot,
            handoff,
        }
    }

    fn check(&self, count: usize) -> postcard::Result<()> {
        if count > self.body.len() - self.pos {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        Ok(())
    }
}

impl<'de> Flavor<'de> for RingFlavor<'de> {
    /// Bytes left unread.
    type Remainder = usize;
    type Source = ();

    fn pop(&mut self) -> postcard::Result<u8> {
        self.check(1)?;
        let byte = self.body.byte(self.pos);
        self.pos += 1;
        Ok(byte)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.body.len() - self.pos)
    }

    fn try_take_n(&mut self, count: usize) -> postcard::Result<&'de [u8]> {
        self.check(count)?;
        let body = &self.body;
        let whole: &'de [u8] = self.snapshot.get_or_init(|| {
            let mut copy = Vec::new();
            body.copy_to(0, body.len(), &mut copy);
            copy.into_boxed_slice()
        });
        let taken = &whole[self.pos..self.pos + count];
        self.pos += count;
        Ok(taken)
    }

    fn try_take_n_temp<'a>(&'a mut self, count: usize) -> postcard::Result<&'a [u8]>
    where
        'de: 'a,
    {
        self.check(count)?;
        if self.handoff.want.replace(false) {
            let mut owned = Vec::new();
            self.body.copy_to(self.pos, count, &mut owned);
            self.handoff.owned.set(Some(owned));
            self.pos += count;
            return Ok(&[]);
        }
        self.scratch.clear();
        self.body.copy_to(self.pos, count, &mut self.scratch);
        self.pos += count;
        Ok(&self.scratch)
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.body.len() - self.pos)
    }
}

/// The visitor for an armed read: hands the parked buffer on.
pub(crate) struct Owned<'h, V> {
    pub(crate) inner: V,
    pub(crate) handoff: &'h Handoff,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Owned<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        match self.handoff.owned.take() {
            Some(owned) => self.inner.visit_byte_buf(owned),
            None => self.inner.visit_bytes(v),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        match self.handoff.owned.take() {
            Some(owned) => match String::from_utf8(owned) {
                Ok(s) => self.inner.visit_string(s),
                Err(_) => Err(E::custom("invalid UTF-8 in a string")),
            },
            None => self.inner.visit_str(v),
        }
    }
}
