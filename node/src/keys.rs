//! How a (namespace, key) pair of the API becomes one engine key, and the
//! checks every request's key goes through first.
//!
//! Engine key = `namespace length (1 byte) | namespace | key`. The length
//! prefix keeps the encoding injective: ("a", "bc") and ("ab", "c") differ.
//! Invariant: every key handed to a shard passed [`encode`], so the engine's
//! own key check never fires for a request the node accepted.

use bytes::{BufMut, Bytes, BytesMut};
use opticache_engine::limits::{NAMESPACE_LEN_MAX, USER_KEY_LEN_MAX};

/// Why a namespace or key is refused (INVALID_ARGUMENT on every path).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("key is empty")]
    EmptyKey,
    #[error("key is {len} bytes, over the limit of {USER_KEY_LEN_MAX}")]
    KeyTooLong { len: usize },
    #[error("namespace is {len} bytes, over the limit of {NAMESPACE_LEN_MAX}")]
    NamespaceTooLong { len: usize },
    #[error("namespace is not valid UTF-8")]
    NamespaceNotUtf8,
}

/// Checks `namespace` and `key` and returns the engine key.
pub fn encode(namespace: &[u8], key: &[u8]) -> Result<Bytes, KeyError> {
    if key.is_empty() {
        return Err(KeyError::EmptyKey);
    }
    if key.len() > USER_KEY_LEN_MAX {
        return Err(KeyError::KeyTooLong { len: key.len() });
    }
    if namespace.len() > NAMESPACE_LEN_MAX {
        return Err(KeyError::NamespaceTooLong { len: namespace.len() });
    }
    if std::str::from_utf8(namespace).is_err() {
        return Err(KeyError::NamespaceNotUtf8);
    }
    let mut out = BytesMut::with_capacity(1 + namespace.len() + key.len());
    out.put_u8(namespace.len() as u8);
    out.put_slice(namespace);
    out.put_slice(key);
    Ok(out.freeze())
}

/// Splits an engine key back into (namespace, key); `None` if it is not one
/// [`encode`] made (the listing of a shard reports such keys as corrupt).
pub fn decode(engine_key: &Bytes) -> Option<(Bytes, Bytes)> {
    let ns_len = *engine_key.first()? as usize;
    if engine_key.len() < 1 + ns_len + 1 {
        return None;
    }
    Some((engine_key.slice(1..1 + ns_len), engine_key.slice(1 + ns_len..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_injective() {
        let a = encode(b"a", b"bc").unwrap();
        let b = encode(b"ab", b"c").unwrap();
        assert_ne!(a, b);
        assert_eq!(&a[..], b"\x01abc");
        assert_eq!(decode(&a).unwrap(), (Bytes::from_static(b"a"), Bytes::from_static(b"bc")));
        let default_ns = encode(b"", b"k").unwrap();
        assert_eq!(decode(&default_ns).unwrap(), (Bytes::new(), Bytes::from_static(b"k")));
    }

    #[test]
    fn limits_at_and_beyond() {
        let key_max = vec![b'k'; USER_KEY_LEN_MAX];
        let ns_max = vec![b'n'; NAMESPACE_LEN_MAX];
        let full = encode(&ns_max, &key_max).unwrap();
        assert_eq!(full.len(), opticache_engine::limits::KEY_LEN_MAX);
        assert_eq!(encode(b"", &vec![b'k'; USER_KEY_LEN_MAX + 1]), Err(KeyError::KeyTooLong { len: 1025 }));
        assert_eq!(encode(&vec![b'n'; NAMESPACE_LEN_MAX + 1], b"k"), Err(KeyError::NamespaceTooLong { len: 256 }));
        assert_eq!(encode(b"", b""), Err(KeyError::EmptyKey));
        assert_eq!(encode(b"\xff\xfe", b"k"), Err(KeyError::NamespaceNotUtf8));
    }

    #[test]
    fn decode_refuses_what_encode_never_makes() {
        assert_eq!(decode(&Bytes::new()), None);
        assert_eq!(decode(&Bytes::from_static(b"\x05ab")), None);
        assert_eq!(decode(&Bytes::from_static(b"\x01a")), None, "an empty user key");
    }
}
