//! Opt-in payload compression. The only module that uses zstd or lz4_flex, so an algorithm can
//! be replaced in one place.
//!
//! Wire shape (docs/PROTOCOL.md, "Compression"): a compressed payload is marked in the high
//! nibble of the frame's `codec` byte (`0x10` zstd, `0x20` LZ4; the low nibble stays the codec
//! tag), and the payload is `uncompressed_len: u32` followed by the compressed bytes. Each side
//! announces what it can decompress under the hello metadata key [`HELLO_KEY`]; a sender
//! compresses only with an algorithm the peer announced.
//!
//! [`inflate`] is the receiver's side and treats its input as hostile: the declared length is
//! checked against the frame limit before anything is allocated, the output buffer is exactly
//! that long, and a payload that would expand beyond it is refused
//! ([`DecompressError::TooLarge`]), never followed.

use crate::Codec;
use bytes::Bytes;

/// Hello and welcome metadata key: the algorithms this side decompresses, comma-separated
/// names (`zstd`, `lz4`).
pub const HELLO_KEY: &str = "echostream.compression";

/// Payloads shorter than this are sent as they are, unless a setting says otherwise: below
/// about a kilobyte the frame overhead dominates and compression rarely pays.
pub const DEFAULT_MIN_SIZE: usize = 1024;

/// Bytes of the uncompressed-length field in front of a compressed payload.
const LEN_FIELD: usize = 4;
/// The bits of the codec byte that name the compression algorithm.
const ALGORITHM_MASK: u8 = 0xF0;
const ZSTD_BITS: u8 = 0x10;
const LZ4_BITS: u8 = 0x20;

/// How this side compresses what it sends. Receiving is always possible; this chooses only
/// whether, and with which algorithm, outgoing payloads are compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Send payloads as they are (the default).
    #[default]
    None,
    /// Zstandard at `level` (1 to 22; 3 is zstd's default; negative levels trade ratio for
    /// speed). Best ratio for text and JSON.
    Zstd {
        /// The zstd compression level.
        level: i32,
    },
    /// LZ4 (block format): less ratio than zstd, much cheaper to compress and decompress.
    Lz4,
}

impl Compression {
    /// The algorithm this setting uses, `None` for [`Compression::None`].
    pub fn algorithm(self) -> Option<Algorithm> {
        match self {
            Compression::None => None,
            Compression::Zstd { .. } => Some(Algorithm::Zstd),
            Compression::Lz4 => Some(Algorithm::Lz4),
        }
    }
}

/// A compression algorithm on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Zstandard (one or more zstd frames, each with its content size).
    Zstd,
    /// LZ4 block format.
    Lz4,
}

impl Algorithm {
    /// The name used in the hello and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Zstd => "zstd",
            Algorithm::Lz4 => "lz4",
        }
    }

    fn bits(self) -> u8 {
        match self {
            Algorithm::Zstd => ZSTD_BITS,
            Algorithm::Lz4 => LZ4_BITS,
        }
    }
}

/// The algorithms a peer decompresses, from its hello.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    zstd: bool,
    lz4: bool,
}

impl Accepted {
    /// Nothing: a peer that announced no compression (or an older one).
    pub const NONE: Accepted = Accepted {
        zstd: false,
        lz4: false,
    };
    /// Everything this version decompresses: what EchoStream announces.
    pub const ALL: Accepted = Accepted {
        zstd: true,
        lz4: true,
    };

    /// Reads a hello value (`zstd,lz4`); unknown names are ignored, so a newer peer's list
    /// still works.
    pub fn parse(value: &str) -> Accepted {
        let mut a = Accepted::NONE;
        for name in value.split(',').map(str::trim) {
            match name {
                "zstd" => a.zstd = true,
                "lz4" => a.lz4 = true,
                _ => {}
            }
        }
        a
    }

    /// The hello value announcing these algorithms.
    pub fn to_value(self) -> String {
        let mut names = Vec::new();
        if self.zstd {
            names.push(Algorithm::Zstd.name());
        }
        if self.lz4 {
            names.push(Algorithm::Lz4.name());
        }
        names.join(",")
    }

    /// Whether `algorithm` is among them.
    pub fn contains(self, algorithm: Algorithm) -> bool {
        match algorithm {
            Algorithm::Zstd => self.zstd,
            Algorithm::Lz4 => self.lz4,
        }
    }
}

/// Compresses `payload` (encoded with `codec`) for a peer that decompresses `accepted`, if it
/// is worth it: the setting names an algorithm the peer accepts, the payload is at least
/// `min_size` bytes, and the result (length field included) is at least 10 % smaller. Returns
/// the codec byte to send and the compressed payload, or `None` to send the payload as it is.
pub fn deflate(
    codec: Codec,
    payload: &[u8],
    setting: Compression,
    accepted: Accepted,
    min_size: usize,
) -> Option<(Codec, Bytes)> {
    let algorithm = setting.algorithm()?;
    if !accepted.contains(algorithm) || payload.len() < min_size.max(1) || codec.tag() & ALGORITHM_MASK != 0 {
        return None;
    }
    let len = u32::try_from(payload.len()).ok()?;
    let mut out = Vec::with_capacity(LEN_FIELD + payload.len() / 2);
    out.extend_from_slice(&len.to_be_bytes());
    match setting {
        Compression::Zstd { level } => {
            let packed = zstd::bulk::compress(payload, level).ok()?;
            out.extend_from_slice(&packed);
        }
        Compression::Lz4 => out.extend_from_slice(&lz4_flex::block::compress(payload)),
        Compression::None => return None,
    }
    // Incompressible data (media, already compressed, random) goes as it is.
    if out.len() > payload.len() - payload.len() / 10 {
        return None;
    }
    Some((Codec::from_tag(codec.tag() | algorithm.bits()), Bytes::from(out)))
}

/// Whether a received codec byte marks a compressed payload, and with which algorithm.
/// `None` for a plain payload (or an unknown marking, left to the codec to refuse).
pub fn algorithm_of(codec: Codec) -> Option<Algorithm> {
    match codec.tag() & ALGORITHM_MASK {
        ZSTD_BITS => Some(Algorithm::Zstd),
        LZ4_BITS => Some(Algorithm::Lz4),
        _ => None,
    }
}

/// The receiver's side: a payload marked compressed is decompressed into at most `limit`
/// bytes (the frame limit); returns the plain codec and payload. A plain payload is returned
/// as it is, without copying.
pub fn inflate(codec: Codec, payload: Bytes, limit: u32) -> Result<(Codec, Bytes), DecompressError> {
    let Some(algorithm) = algorithm_of(codec) else {
        return Ok((codec, payload));
    };
    let plain = Codec::from_tag(codec.tag() & !ALGORITHM_MASK);
    let Some((len, body)) = payload.split_first_chunk::<LEN_FIELD>() else {
        return Err(DecompressError::Corrupt {
            algorithm,
            detail: "payload shorter than its 4-byte length field".into(),
        });
    };
    let declared = u32::from_be_bytes(*len);
    // Checked before anything is allocated.
    if declared > limit {
        return Err(DecompressError::TooLarge {
            algorithm,
            declared: u64::from(declared),
            limit,
        });
    }
    let declared_len = declared as usize;
    let out = match algorithm {
        Algorithm::Zstd => {
            // The sizes the zstd frames themselves record, summed: a frame that records none,
            // or more than declared, is refused before decompressing.
            match zstd::zstd_safe::find_decompressed_size(body) {
                Ok(Some(n)) if n == u64::from(declared) => {}
                Ok(Some(n)) if n > u64::from(declared) => {
                    return Err(DecompressError::TooLarge {
                        algorithm,
                        declared: n,
                        limit: declared,
                    })
                }
                Ok(Some(n)) => {
                    return Err(DecompressError::Corrupt {
                        algorithm,
                        detail: format!("the zstd frames hold {n} bytes, the length field says {declared}"),
                    })
                }
                Ok(None) | Err(_) => {
                    return Err(DecompressError::Corrupt {
                        algorithm,
                        detail: "zstd frame without a content size, or not a zstd frame".into(),
                    })
                }
            }
            // The hard bound: the decoder writes into exactly `declared` bytes of room.
            zstd::bulk::decompress(body, declared_len).map_err(|e| DecompressError::Corrupt {
                algorithm,
                detail: e.to_string(),
            })?
        }
        Algorithm::Lz4 => {
            let mut out = vec![0u8; declared_len];
            match lz4_flex::block::decompress_into(body, &mut out) {
                Ok(n) if n == declared_len => {}
                Ok(n) => {
                    return Err(DecompressError::Corrupt {
                        algorithm,
                        detail: format!("decompressed to {n} bytes, the length field says {declared}"),
                    })
                }
                Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) => {
                    return Err(DecompressError::TooLarge {
                        algorithm,
                        declared: u64::from(declared) + 1,
                        limit: declared,
                    })
                }
                Err(e) => {
                    return Err(DecompressError::Corrupt {
                        algorithm,
                        detail: e.to_string(),
                    })
                }
            }
            out
        }
    };
    if out.len() != declared_len {
        return Err(DecompressError::Corrupt {
            algorithm,
            detail: format!(
                "decompressed to {} bytes, the length field says {declared}",
                out.len()
            ),
        });
    }
    Ok((plain, Bytes::from(out)))
}

/// A compressed payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecompressError {
    /// It declares, or expands to, more than the limit: the connection closes with
    /// `FRAME_TOO_LARGE`.
    #[error(
        "{} payload expands to {declared} bytes or more, over the limit of {limit} bytes",
        algorithm.name()
    )]
    TooLarge {
        /// The algorithm named by the codec byte.
        algorithm: Algorithm,
        /// What it declared, or at least how far it expands.
        declared: u64,
        /// The frame limit, or the declared length it went beyond.
        limit: u32,
    },
    /// It does not decompress: the connection closes with `PROTOCOL_VIOLATION`.
    #[error("corrupt {} payload: {detail}", algorithm.name())]
    Corrupt {
        /// The algorithm named by the codec byte.
        algorithm: Algorithm,
        /// What is wrong.
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Hostile input: any bytes, any declared length, both algorithms: an error or a
        /// payload of exactly the declared length within the limit, never a panic.
        #[test]
        fn arbitrary_payloads_never_panic_nor_exceed_the_limit(
            bits in prop_oneof![Just(ZSTD_BITS), Just(LZ4_BITS)],
            declared in 0u32..8192,
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut payload = declared.to_be_bytes().to_vec();
            payload.extend_from_slice(&body);
            if let Ok((codec, out)) = inflate(Codec::from_tag(1 | bits), Bytes::from(payload), 4096) {
                prop_assert_eq!(codec, Codec::Bincode);
                prop_assert_eq!(out.len(), declared as usize);
                prop_assert!(out.len() <= 4096);
            }
        }

        #[test]
        fn compressible_payloads_round_trip(
            seed in proptest::collection::vec(any::<u8>(), 1..64),
            repeat in 16usize..512,
            lz4 in any::<bool>(),
        ) {
            let data: Vec<u8> = seed.iter().copied().cycle().take(seed.len() * repeat).collect();
            let setting = if lz4 { Compression::Lz4 } else { Compression::Zstd { level: 1 } };
            if let Some((codec, packed)) = deflate(Codec::Json, &data, setting, Accepted::ALL, 0) {
                let (plain, out) = inflate(codec, packed, 1 << 20).unwrap();
                prop_assert_eq!(plain, Codec::Json);
                prop_assert_eq!(&out[..], &data[..]);
            }
        }
    }

    fn json_like(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 64);
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(
                format!("{{\"id\":{i},\"name\":\"sensor-{}\",\"ok\":true}},", i % 17).as_bytes(),
            );
            i += 1;
        }
        v.truncate(n);
        v
    }

    fn noise(n: usize) -> Vec<u8> {
        // xorshift: incompressible, deterministic.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn zstd_and_lz4_round_trip_and_mark_the_codec() {
        let data = json_like(64 * 1024);
        for setting in [Compression::Zstd { level: 3 }, Compression::Lz4] {
            let (codec, packed) =
                deflate(Codec::Json, &data, setting, Accepted::ALL, 1024).expect("compressed");
            assert!(
                packed.len() < data.len() / 2,
                "{setting:?}: {} bytes",
                packed.len()
            );
            assert_eq!(algorithm_of(codec), setting.algorithm());
            let (plain, out) = inflate(codec, packed, 1 << 20).expect("inflates");
            assert_eq!(plain, Codec::Json);
            assert_eq!(&out[..], &data[..]);
        }
    }

    #[test]
    fn plain_payloads_pass_through_inflate_untouched() {
        let data = Bytes::from_static(b"hello");
        let (codec, out) = inflate(Codec::Bincode, data.clone(), 16).expect("plain");
        assert_eq!(codec, Codec::Bincode);
        assert_eq!(out, data);
    }

    #[test]
    fn small_incompressible_or_unaccepted_payloads_are_not_compressed() {
        let z = Compression::Zstd { level: 3 };
        assert!(deflate(Codec::Json, &json_like(1000), z, Accepted::ALL, 1024).is_none());
        assert!(deflate(Codec::Json, &noise(64 * 1024), z, Accepted::ALL, 1024).is_none());
        assert!(deflate(
            Codec::Json,
            &noise(64 * 1024),
            Compression::Lz4,
            Accepted::ALL,
            1024
        )
        .is_none());
        assert!(deflate(Codec::Json, &json_like(8192), z, Accepted::NONE, 1024).is_none());
        assert!(deflate(Codec::Json, &json_like(8192), z, Accepted::parse("lz4"), 1024).is_none());
        assert!(deflate(Codec::Json, &json_like(8192), Compression::None, Accepted::ALL, 0).is_none());
    }

    #[test]
    fn hello_value_round_trips_and_ignores_unknown_names() {
        assert_eq!(Accepted::parse(&Accepted::ALL.to_value()), Accepted::ALL);
        let a = Accepted::parse("brotli, lz4");
        assert!(a.contains(Algorithm::Lz4) && !a.contains(Algorithm::Zstd));
        assert_eq!(Accepted::parse(""), Accepted::NONE);
    }

    #[test]
    fn declared_length_over_the_limit_is_refused_before_decompressing() {
        let data = json_like(8192);
        for setting in [Compression::Zstd { level: 1 }, Compression::Lz4] {
            let (codec, packed) = deflate(Codec::Json, &data, setting, Accepted::ALL, 0).expect("compressed");
            let err = inflate(codec, packed, 4096).expect_err("over the limit");
            assert!(
                matches!(
                    err,
                    DecompressError::TooLarge {
                        declared: 8192,
                        limit: 4096,
                        ..
                    }
                ),
                "{err}"
            );
        }
    }

    /// A zip bomb: a small payload that claims a small length but expands far beyond it.
    #[test]
    fn payload_expanding_beyond_its_declared_length_is_too_large() {
        let zeros = vec![0u8; 16 << 20];
        let zstd_bomb = zstd::bulk::compress(&zeros, 19).expect("zstd");
        let lz4_bomb = lz4_flex::block::compress(&zeros);
        assert!(zstd_bomb.len() < 4096 && lz4_bomb.len() < 128 * 1024);
        for (bits, bomb) in [(ZSTD_BITS, zstd_bomb), (LZ4_BITS, lz4_bomb)] {
            let mut payload = 1024u32.to_be_bytes().to_vec();
            payload.extend_from_slice(&bomb);
            let err = inflate(Codec::from_tag(1 | bits), Bytes::from(payload), 32 << 20).expect_err("bomb");
            assert!(matches!(err, DecompressError::TooLarge { .. }), "{err}");
        }
    }

    #[test]
    fn truncated_and_corrupt_payloads_are_errors_not_panics() {
        let data = json_like(8192);
        for setting in [Compression::Zstd { level: 3 }, Compression::Lz4] {
            let (codec, packed) = deflate(Codec::Json, &data, setting, Accepted::ALL, 0).expect("compressed");
            for cut in [0, 2, 4, 5, packed.len() / 2, packed.len() - 1] {
                assert!(
                    inflate(codec, packed.slice(..cut), 1 << 20).is_err(),
                    "{setting:?} cut {cut}"
                );
            }
            let mut flipped = packed.to_vec();
            for b in flipped.iter_mut().skip(8) {
                *b ^= 0x5A;
            }
            assert!(inflate(codec, Bytes::from(flipped), 1 << 20).is_err());
        }
    }
}
