//! [`Utf8Bytes`]: text known to be valid UTF-8, held in reference-counted
//! [`Bytes`]. Every text this crate receives or sends is one: a received
//! WebSocket text message, an Engine.IO text packet, an encoded Socket.IO
//! packet that one broadcast shares between all its recipients.
//!
//! The crate's own type, so that its public API names none of its
//! dependencies' types (it used to re-export tungstenite's). UTF-8 is checked
//! by every constructor; there is no `unsafe`, so [`Utf8Bytes::as_str`] checks
//! again (one pass, no copy), and the hot paths that only need the bytes (the
//! WebSocket writer, the broker envelope) use [`Utf8Bytes::as_bytes`].

use std::fmt;
use std::str::Utf8Error;

use bytes::Bytes;

/// Text known to be valid UTF-8, over reference-counted bytes: cloning and
/// slicing never copy the text.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Checks that `bytes` are UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Self(bytes))
    }

    /// A static string, without copying it.
    pub const fn from_static(text: &'static str) -> Self {
        Self(Bytes::from_static(text.as_bytes()))
    }

    /// The text (checked again: one pass, no copy).
    pub fn as_str(&self) -> &str {
        // Checked by every constructor, so this cannot fail; a failure would
        // be a bug in this module, shown as an empty string rather than a panic.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text's UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No text at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text after the first `n` bytes, if `n` is on a character boundary.
    pub fn tail(&self, n: usize) -> Option<Self> {
        self.as_str()
            .is_char_boundary(n)
            .then(|| Self(self.0.slice(n..)))
    }

    /// The bytes underneath, without copying them.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = Utf8Error;

    fn try_from(bytes: Bytes) -> Result<Self, Utf8Error> {
        Self::from_utf8(bytes)
    }
}

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Self {
        Self(Bytes::from(text))
    }
}

impl From<&'static str> for Utf8Bytes {
    fn from(text: &'static str) -> Self {
        Self::from_static(text)
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(text: Utf8Bytes) -> Self {
        text.0
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_utf8_gets_in() {
        let text = Utf8Bytes::try_from(Bytes::from_static("héllo".as_bytes())).unwrap();
        assert_eq!(text.as_str(), "héllo");
        assert_eq!(text.len(), 6);
        assert_eq!(text, "héllo");
        assert!(Utf8Bytes::try_from(Bytes::from_static(&[0x68, 0xff])).is_err());
        assert_eq!(Bytes::from(Utf8Bytes::from(String::from("a"))), "a");
        assert!(Utf8Bytes::default().is_empty());
    }

    #[test]
    fn tails_stay_on_character_boundaries() {
        let text = Utf8Bytes::from_static("4é!");
        assert_eq!(text.tail(1).unwrap(), "é!");
        assert_eq!(text.tail(2), None);
        assert_eq!(text.tail(4).unwrap(), "");
        assert_eq!(text.tail(5), None);
        assert_eq!(format!("{text} {text:?}"), "4é! \"4é!\"");
    }
}
