//! Payload codecs. The only module that touches bincode or serde_json, so a
//! codec can be replaced in one place.

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

/// How a payload is encoded. Carried as a one-byte tag in every request,
/// response and event, so each message may use a different codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// bincode 2 in serde mode, standard configuration (varint integers). Tag 1.
    #[default]
    Bincode,
    /// JSON (serde_json). Tag 2. For tools, scripts and other languages.
    Json,
    /// A tag this version does not know. Decoding it fails with [`CodecError::Unsupported`].
    Unknown(u8),
}

/// Upper bound on what a bincode payload may *claim* to contain while being
/// decoded (lengths of strings and sequences). The payload's real size is
/// already bounded by the frame limit; this stops a small payload from
/// claiming a huge collection.
const BINCODE_CLAIM_LIMIT: usize = 1 << 30;

impl Codec {
    /// The wire tag.
    pub fn tag(self) -> u8 {
        match self {
            Codec::Bincode => 1,
            Codec::Json => 2,
            Codec::Unknown(t) => t,
        }
    }

    /// The codec for a wire tag.
    pub fn from_tag(tag: u8) -> Codec {
        match tag {
            1 => Codec::Bincode,
            2 => Codec::Json,
            t => Codec::Unknown(t),
        }
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Bincode => "bincode",
            Codec::Json => "json",
            Codec::Unknown(_) => "unknown",
        }
    }

    /// Encodes a value.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes, CodecError> {
        match self {
            Codec::Bincode => {
                // Measured first, so the buffer is allocated once at its exact size (no
                // regrowth) and becomes `Bytes` without a second allocation.
                let err = |e: bincode::error::EncodeError| CodecError::Encode(e.to_string());
                let mut size = bincode::enc::write::SizeWriter::default();
                bincode::serde::encode_into_writer(value, &mut size, bincode_config()).map_err(err)?;
                let mut out = Vec::with_capacity(size.bytes_written);
                bincode::serde::encode_into_std_write(value, &mut out, bincode_config()).map_err(err)?;
                Ok(Bytes::from(out))
            }
            Codec::Json => serde_json::to_vec(value)
                .map(Bytes::from)
                .map_err(|e| CodecError::Encode(e.to_string())),
            Codec::Unknown(t) => Err(CodecError::Unsupported(t)),
        }
    }

    /// Decodes a value. The whole input must be consumed (bincode) or be one
    /// JSON document.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            Codec::Bincode => {
                let config = bincode_config().with_limit::<BINCODE_CLAIM_LIMIT>();
                let (value, read) = bincode::serde::decode_from_slice(bytes, config)
                    .map_err(|e| CodecError::Decode(e.to_string()))?;
                if read != bytes.len() {
                    return Err(CodecError::Decode(format!(
                        "{} trailing bytes after the value",
                        bytes.len() - read
                    )));
                }
                Ok(value)
            }
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| CodecError::Decode(e.to_string())),
            Codec::Unknown(t) => Err(CodecError::Unsupported(t)),
        }
    }
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// A payload could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("encode failed: {0}")]
    Encode(String),
    /// The bytes do not decode into the expected type.
    #[error("decode failed: {0}")]
    Decode(String),
    /// The codec tag is not one this version supports.
    #[error("unsupported codec tag {0} (supported: 1 = bincode, 2 = json)")]
    Unsupported(u8),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Session {
        user: String,
        id: u64,
        roles: Vec<String>,
    }

    #[test]
    fn bincode_and_json_round_trip_a_struct() {
        let s = Session {
            user: "alice".into(),
            id: 7,
            roles: vec!["admin".into()],
        };
        for codec in [Codec::Bincode, Codec::Json] {
            let bytes = codec.encode(&s).unwrap();
            assert_eq!(codec.decode::<Session>(&bytes).unwrap(), s, "{codec:?}");
        }
    }

    #[test]
    fn str_argument_decodes_as_string() {
        for codec in [Codec::Bincode, Codec::Json] {
            let bytes = codec.encode("alice").unwrap();
            assert_eq!(codec.decode::<String>(&bytes).unwrap(), "alice");
        }
    }

    #[test]
    fn json_payload_is_plain_json() {
        let bytes = Codec::Json.encode(&("a", 3u8)).unwrap();
        assert_eq!(&bytes[..], br#"["a",3]"#);
    }

    #[test]
    fn wrong_type_is_a_decode_error() {
        let bytes = Codec::Json.encode("text").unwrap();
        assert!(matches!(
            Codec::Json.decode::<u64>(&bytes),
            Err(CodecError::Decode(_))
        ));
        let bytes = Codec::Bincode.encode(&1u8).unwrap();
        assert!(matches!(
            Codec::Bincode.decode::<String>(&bytes),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = Codec::Bincode.encode(&5u32).unwrap().to_vec();
        bytes.push(0);
        assert!(Codec::Bincode.decode::<u32>(&bytes).is_err());
    }

    #[test]
    fn huge_claimed_length_does_not_allocate() {
        // A varint length claiming about 2^62 elements followed by nothing.
        let bytes = [0xFDu8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F];
        assert!(Codec::Bincode.decode::<Vec<u64>>(&bytes).is_err());
        assert!(Codec::Bincode.decode::<String>(&bytes).is_err());
    }

    #[test]
    fn unknown_tag_is_unsupported() {
        assert_eq!(Codec::from_tag(9), Codec::Unknown(9));
        assert_eq!(
            Codec::Unknown(9).decode::<u8>(&[1]),
            Err(CodecError::Unsupported(9))
        );
        assert_eq!(Codec::from_tag(Codec::Json.tag()), Codec::Json);
    }
}
