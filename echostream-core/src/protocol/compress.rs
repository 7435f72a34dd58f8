//! Payload compression on a connection: this side's announcement in its hello, what the peer
//! announced, compressing what we send, and decompressing frames before
//! [`CallState::classify`](super::state::CallState::classify) reads them. The algorithms and
//! the wire shape are `echostream_types::compress`.

use super::Peer;
use bytes::Bytes;
use echostream_types::compress::{self, Accepted, Compression, DecompressError, HELLO_KEY};
use echostream_types::{CloseCode, Codec, Frame, Metadata, ResponseFrame};

/// Adds this side's announcement (everything it decompresses) to its hello or welcome.
pub(super) fn announce(metadata: &mut Metadata) {
    metadata.insert(HELLO_KEY, Accepted::ALL.to_value());
}

/// What the peer decompresses, from its hello; nothing when it announced nothing.
pub(super) fn accepted_by(peer_hello: &Metadata) -> Accepted {
    peer_hello
        .get_str(HELLO_KEY)
        .map_or(Accepted::NONE, Accepted::parse)
}

impl Peer {
    /// Compresses a payload we are about to send, when `choice` (else the connection's
    /// setting) names an algorithm the peer announced and it pays; `None`: send it as it is.
    pub(crate) fn deflate(
        &self,
        codec: Codec,
        payload: &Bytes,
        choice: Option<Compression>,
    ) -> Option<(Codec, Bytes)> {
        let config = &self.shared.config;
        let setting = choice.unwrap_or(config.compression);
        setting.algorithm()?;
        // The peer bounds the *uncompressed* size by its frame limit too: a payload over it goes
        // plain, so the usual local check refuses it (`Error::FrameTooLarge`) instead of the
        // peer closing the connection.
        if payload.len() as u64 > u64::from(self.peer_max_frame_size()) {
            return None;
        }
        let accepted = self.shared.peer_compression.get().copied()?;
        compress::deflate(codec, payload, setting, accepted, config.compression_min_size)
    }
}

/// Decompresses the payload of a request, a successful response or an event, into at most
/// `limit` bytes (our frame limit). A payload that declares or expands beyond it is
/// `FRAME_TOO_LARGE`, one that does not decompress `PROTOCOL_VIOLATION`; either closes the
/// connection, as an oversized frame does.
pub(super) fn inflate_frame(frame: Frame, limit: u32) -> Result<Frame, (CloseCode, String)> {
    let fail = |what: String, e: DecompressError| {
        let code = match e {
            DecompressError::TooLarge { .. } => CloseCode::FRAME_TOO_LARGE,
            _ => CloseCode::PROTOCOL_VIOLATION,
        };
        (code, format!("{what}: {e}"))
    };
    Ok(match frame {
        Frame::Request(mut r) if compress::algorithm_of(r.codec).is_some() => {
            (r.codec, r.payload) = compress::inflate(r.codec, std::mem::take(&mut r.payload), limit)
                .map_err(|e| fail(format!("request `{}`", r.method), e))?;
            Frame::Request(r)
        }
        Frame::Response(ResponseFrame {
            id,
            result: Ok((codec, payload)),
        }) if compress::algorithm_of(codec).is_some() => Frame::Response(ResponseFrame {
            id,
            result: Ok(
                compress::inflate(codec, payload, limit).map_err(|e| fail(format!("response {id}"), e))?
            ),
        }),
        Frame::Event(mut ev) if compress::algorithm_of(ev.codec).is_some() => {
            (ev.codec, ev.payload) = compress::inflate(ev.codec, std::mem::take(&mut ev.payload), limit)
                .map_err(|e| fail(format!("event `{}`", ev.name), e))?;
            Frame::Event(ev)
        }
        other => other,
    })
}
