//! [`Fingerprint`]: the SHA-256 of a certificate, how pinned and known-hosts trust name a server
//! (and pinned client certificates name a client).

use std::fmt;
use std::str::FromStr;

/// SHA-256 of a certificate's DER encoding: how pinned and known-hosts trust identify a server.
///
/// `Display` writes 64 lowercase hex digits. `FromStr` accepts hex digits in any case, with or
/// without `:` separators, and with or without a `sha256:` prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprint of a DER-encoded certificate.
    pub fn of(cert_der: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }

    /// The 32 bytes of the digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint(sha256:{self})")
    }
}

/// Why a string is not a [`Fingerprint`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseFingerprintError {
    /// Nothing but whitespace, separators or the prefix.
    #[error("empty fingerprint: expected 64 hex digits of a SHA-256 digest")]
    Empty,
    /// A prefix naming another digest, such as `sha1:`.
    #[error("unsupported fingerprint algorithm {0:?}: only `sha256:` fingerprints are used")]
    UnsupportedAlgorithm(String),
    /// A character that is neither a hex digit nor a `:` separator.
    #[error(
        "invalid character {character:?} at position {position} in fingerprint: expected hex \
         digits, optionally separated by ':'"
    )]
    InvalidCharacter {
        /// The offending character.
        character: char,
        /// Its byte offset in the string that was parsed.
        position: usize,
    },
    /// The wrong number of hex digits.
    #[error("fingerprint has {digits} hex digits; a SHA-256 fingerprint has 64")]
    WrongLength {
        /// How many hex digits were found.
        digits: usize,
    },
}

impl FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let offset = s.len() - s.trim_start().len();
        let (body, body_offset) = match trimmed.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case("sha256:") => (&trimmed[7..], offset + 7),
            _ => (trimmed, offset),
        };
        // A word before the first ':' that is not hex, like "sha1:", names another digest.
        if let Some((algorithm, _)) = body.split_once(':') {
            let is_hex = algorithm.chars().all(|c| c.is_ascii_hexdigit());
            let is_word = algorithm.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !algorithm.is_empty() && !is_hex && is_word {
                return Err(ParseFingerprintError::UnsupportedAlgorithm(algorithm.to_string()));
            }
        }
        let mut digits = String::with_capacity(64);
        for (index, character) in body.char_indices() {
            if character == ':' {
                continue;
            }
            if !character.is_ascii_hexdigit() {
                return Err(ParseFingerprintError::InvalidCharacter {
                    character,
                    position: body_offset + index,
                });
            }
            digits.push(character);
        }
        if digits.is_empty() {
            return Err(ParseFingerprintError::Empty);
        }
        if digits.len() != 64 {
            return Err(ParseFingerprintError::WrongLength { digits: digits.len() });
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&digits, &mut bytes).map_err(|_| {
            // Unreachable after the checks above; report it as a length problem rather than panic.
            ParseFingerprintError::WrongLength { digits: digits.len() }
        })?;
        Ok(Self(bytes))
    }
}
/// `sha256:a, sha256:b`: how failure messages list fingerprints.
pub(super) fn join_fingerprints(fingerprints: &[Fingerprint]) -> String {
    fingerprints
        .iter()
        .map(|fp| format!("sha256:{fp}"))
        .collect::<Vec<_>>()
        .join(", ")
}
