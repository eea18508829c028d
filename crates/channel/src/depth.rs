//! A nesting limit for decoding, so that a hostile peer cannot overflow the
//! stack.
//!
//! postcard decodes recursively and has no depth limit: for a recursive
//! type (`enum Tree { Leaf, Node(Box<Tree>) }`), one byte per level is
//! enough to nest until the thread's stack overflows and the process
//! aborts. This adapter wraps the deserializer and every visitor, seed and
//! access it hands out, and takes one unit of budget per container level
//! (option, newtype, sequence, tuple, map, struct, enum). When the budget is
//! spent, decoding fails with an error instead of recursing further.

use std::cell::{Cell, OnceCell};
use std::fmt;

use postcard::de_flavors::Flavor;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use crate::ring::RingBody;
use crate::ringread::{Handoff, Owned, RingFlavor};

/// Container levels a received value may nest. Deep enough for any
/// reasonable message (a struct in a Vec in an Option in an enum is four);
/// shallow enough that the decode of the deepest value fits a 2 MiB thread
/// stack in a debug build.
pub const MAX_DEPTH: usize = 128;

/// Decodes `T` from `body` with at most `MAX_DEPTH` nesting. Returns the
/// value and the bytes after it; `Err(None)` when the limit was hit.
pub(crate) fn decode<'de, T: de::Deserialize<'de>>(
    body: &'de [u8],
) -> Result<(T, &'de [u8]), Option<postcard::Error>> {
    limited(postcard::Deserializer::from_bytes(body), None)
}

/// Decodes `T` from a body in ring memory, copying each byte out once (see
/// [`ringread`](crate::ringread)). Returns the value and the number of
/// bytes after it.
pub(crate) fn decode_ring<T: de::DeserializeOwned>(
    body: &RingBody<'_>,
) -> Result<(T, usize), Option<postcard::Error>> {
    let snapshot = OnceCell::new();
    let handoff = Handoff::default();
    let flavor = RingFlavor::new(body, &snapshot, &handoff);
    limited(postcard::Deserializer::from_flavor(flavor), Some(&handoff))
}

fn limited<'de, T: de::Deserialize<'de>, F: Flavor<'de>>(
    mut de: postcard::Deserializer<'de, F>,
    handoff: Option<&Handoff>,
) -> Result<(T, F::Remainder), Option<postcard::Error>> {
    let hit = Cell::new(false);
    let value = T::deserialize(Limited {
        inner: &mut de,
        left: MAX_DEPTH,
        hit: &hit,
        handoff,
    });
    match value {
        Ok(value) => Ok((value, de.finalize().map_err(Some)?)),
        Err(_) if hit.get() => Err(None),
        Err(e) => Err(Some(e)),
    }
}

/// A deserializer, visitor, seed or access with `left` levels to go.
struct Limited<'h, X> {
    inner: X,
    left: usize,
    hit: &'h Cell<bool>,
    /// Set when decoding from ring memory.
    handoff: Option<&'h Handoff>,
}

impl<'h, X> Limited<'h, X> {
    fn wrap<Y>(&self, inner: Y) -> Limited<'h, Y> {
        Limited {
            inner,
            left: self.left,
            hit: self.hit,
            handoff: self.handoff,
        }
    }

    /// One level deeper, or the error that ends decoding.
    fn deeper<Y, E: de::Error>(&self, inner: Y) -> Result<Limited<'h, Y>, E> {
        match self.left.checked_sub(1) {
            Some(left) => Ok(Limited {
                inner,
                left,
                hit: self.hit,
                handoff: self.handoff,
            }),
            None => {
                self.hit.set(true);
                Err(E::custom("value nested too deeply"))
            }
        }
    }
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Self::Error> {
            let visitor = self.wrap(visitor);
            self.inner.$method($($arg,)* visitor)
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<'_, D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any(); deserialize_bool(); deserialize_i8(); deserialize_i16(); deserialize_i32();
        deserialize_i64(); deserialize_i128(); deserialize_u8(); deserialize_u16(); deserialize_u32();
        deserialize_u64(); deserialize_u128(); deserialize_f32(); deserialize_f64(); deserialize_char();
        deserialize_str(); deserialize_bytes();
        deserialize_option(); deserialize_unit(); deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str); deserialize_seq(); deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize); deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier(); deserialize_ignored_any();
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let visitor = self.wrap(visitor);
        match self.handoff {
            Some(handoff) => handoff.armed(|| {
                self.inner.deserialize_string(Owned {
                    inner: visitor,
                    handoff,
                })
            }),
            None => self.inner.deserialize_string(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let visitor = self.wrap(visitor);
        match self.handoff {
            Some(handoff) => handoff.armed(|| {
                self.inner.deserialize_byte_buf(Owned {
                    inner: visitor,
                    handoff,
                })
            }),
            None => self.inner.deserialize_byte_buf(visitor),
        }
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {
        $(fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        })*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Limited<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool); visit_i8(i8); visit_i16(i16); visit_i32(i32); visit_i64(i64); visit_i128(i128);
        visit_u8(u8); visit_u16(u16); visit_u32(u32); visit_u64(u64); visit_u128(u128);
        visit_f32(f32); visit_f64(f64); visit_char(char); visit_str(&str); visit_borrowed_str(&'de str);
        visit_string(String); visit_bytes(&[u8]); visit_borrowed_bytes(&'de [u8]); visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let d = self.deeper(d)?;
        self.inner.visit_some(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let d = self.deeper(d)?;
        self.inner.visit_newtype_struct(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let seq = self.deeper(seq)?;
        self.inner.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let map = self.deeper(map)?;
        self.inner.visit_map(map)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let data = self.deeper(data)?;
        self.inner.visit_enum(data)
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Limited<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        let d = self.wrap(d);
        self.inner.deserialize(d)
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Limited<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Limited<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'h, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Limited<'h, A> {
    type Error = A::Error;
    type Variant = Limited<'h, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (left, hit, handoff) = (self.left, self.hit, self.handoff);
        let seed = self.wrap(seed);
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((
            value,
            Limited {
                inner: variant,
                left,
                hit,
                handoff,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Limited<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.wrap(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(visitor);
        self.inner.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(visitor);
        self.inner.struct_variant(fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    fn nested(levels: usize) -> Vec<u8> {
        let mut body = vec![1u8; levels]; // Node(..) is variant 1
        body.push(0); // Leaf
        body
    }

    #[test]
    fn shallow_values_decode() {
        let body = nested(20);
        let (tree, rest) = decode::<Tree>(&body).unwrap();
        assert!(rest.is_empty());
        assert_ne!(tree, Tree::Leaf);
        let body = postcard::to_allocvec(&Some(vec![(1u8, "x".to_string())])).unwrap();
        let (v, _) = decode::<Option<Vec<(u8, String)>>>(&body).unwrap();
        assert_eq!(v, Some(vec![(1, "x".to_string())]));
    }

    #[test]
    fn deep_values_fail_instead_of_overflowing_the_stack() {
        // 100,000 levels abort the process without the limit.
        assert!(matches!(decode::<Tree>(&nested(100_000)), Err(None)));
        assert!(matches!(decode::<Tree>(&nested(MAX_DEPTH + 1)), Err(None)));
        // A postcard error that is not the depth is reported as such.
        assert!(matches!(decode::<Tree>(&[7]), Err(Some(_))));
    }
}
