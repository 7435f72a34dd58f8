//! The cursor helpers every byte format of this crate uses: reads over [`Bytes`] that check the
//! bytes are there before taking them and name the field that was short, and the string and
//! metadata encodings the control frames and the stream header share. Each format turns a
//! [`CursorError`] into its own error type with `?`.

use crate::Metadata;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A read ran past the end of the input, or a field broke its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CursorError {
    /// The input ended inside this field.
    Truncated(&'static str),
    /// This string field is not UTF-8.
    Utf8(&'static str),
    /// This field is longer than its limit (declared by the peer, or too long to encode).
    TooLong {
        what: &'static str,
        len: usize,
        limit: usize,
    },
}

/// Fails unless `n` more bytes are present.
fn need(b: &Bytes, n: usize, what: &'static str) -> Result<(), CursorError> {
    if b.remaining() < n {
        return Err(CursorError::Truncated(what));
    }
    Ok(())
}

pub(crate) fn get_u8(b: &mut Bytes, what: &'static str) -> Result<u8, CursorError> {
    need(b, 1, what)?;
    Ok(b.get_u8())
}

pub(crate) fn get_u16(b: &mut Bytes, what: &'static str) -> Result<u16, CursorError> {
    need(b, 2, what)?;
    Ok(b.get_u16())
}

pub(crate) fn get_u32(b: &mut Bytes, what: &'static str) -> Result<u32, CursorError> {
    need(b, 4, what)?;
    Ok(b.get_u32())
}

pub(crate) fn get_u64(b: &mut Bytes, what: &'static str) -> Result<u64, CursorError> {
    need(b, 8, what)?;
    Ok(b.get_u64())
}

/// `len` bytes, uncopied. The length was read from the peer: it is checked against what is
/// actually there before slicing (slicing never allocates, but must not panic).
pub(crate) fn get_bytes(b: &mut Bytes, len: usize, what: &'static str) -> Result<Bytes, CursorError> {
    need(b, len, what)?;
    Ok(b.split_to(len))
}

/// A `len: u16` string.
pub(crate) fn get_str(b: &mut Bytes, what: &'static str) -> Result<String, CursorError> {
    get_str_max(b, what, u16::MAX as usize)
}

/// A `len: u16` string of at most `limit` bytes; the limit is checked before the length.
pub(crate) fn get_str_max(b: &mut Bytes, what: &'static str, limit: usize) -> Result<String, CursorError> {
    let len = get_u16(b, what)? as usize;
    if len > limit {
        return Err(CursorError::TooLong { what, len, limit });
    }
    let raw = get_bytes(b, len, what)?;
    String::from_utf8(raw.to_vec()).map_err(|_| CursorError::Utf8(what))
}

/// `count: u16`, then per entry `key: str`, `len: u32`, `value`.
pub(crate) fn get_metadata(b: &mut Bytes) -> Result<Metadata, CursorError> {
    let count = get_u16(b, "metadata count")? as usize;
    // Each entry takes at least 6 bytes: refuse counts the input cannot hold before reserving
    // room for them.
    if count * 6 > b.remaining() {
        return Err(CursorError::Truncated("metadata"));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let key = get_str(b, "metadata key")?;
        let len = get_u32(b, "metadata value length")? as usize;
        let value = get_bytes(b, len, "metadata value")?;
        entries.push((key, value));
    }
    Ok(Metadata::from_entries(entries))
}

/// Writes a `len: u16` string; longer strings are an error naming `field`.
pub(crate) fn put_str(dst: &mut BytesMut, field: &'static str, s: &str) -> Result<(), CursorError> {
    dst.put_u16(u16_len(field, s.len())?);
    dst.put_slice(s.as_bytes());
    Ok(())
}

/// Writes metadata as [`get_metadata`] reads it.
pub(crate) fn put_metadata(dst: &mut BytesMut, m: &Metadata) -> Result<(), CursorError> {
    dst.put_u16(u16_len("metadata entries", m.len())?);
    for (k, v) in m.iter() {
        put_str(dst, "metadata key", k)?;
        let len = u32::try_from(v.len()).map_err(|_| CursorError::TooLong {
            what: "metadata value",
            len: v.len(),
            limit: u32::MAX as usize,
        })?;
        dst.put_u32(len);
        dst.put_slice(v);
    }
    Ok(())
}

fn u16_len(what: &'static str, len: usize) -> Result<u16, CursorError> {
    u16::try_from(len).map_err(|_| CursorError::TooLong {
        what,
        len,
        limit: u16::MAX as usize,
    })
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_name_the_short_field() {
        let mut b = Bytes::from_static(&[1, 2, 3]);
        assert_eq!(get_u32(&mut b, "id"), Err(CursorError::Truncated("id")));
        assert_eq!(get_u16(&mut b, "len"), Ok(0x0102));
        assert_eq!(get_bytes(&mut b, 2, "tail"), Err(CursorError::Truncated("tail")));
    }

    #[test]
    fn a_string_limit_is_checked_before_the_bytes_are_read() {
        let mut b = Bytes::from_static(&[0, 200, b'a']);
        assert_eq!(
            get_str_max(&mut b, "name", 10),
            Err(CursorError::TooLong {
                what: "name",
                len: 200,
                limit: 10
            })
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_str("héllo", 2), "h");
        assert_eq!(truncate_str("héllo", 3), "hé");
        assert_eq!(truncate_str("abc", 10), "abc");
    }
}
