//! [`Incoming`]: a stream the peer opened, admitted by policy and waiting for its acceptor.
//! Made by the per-connection code (`conn`), queued and routed by `control`; a file of its own
//! so that those two do not import each other.

use super::xstream::ErrorHalfEnd;
use super::{Side, StreamError, XStream};
use crate::protocol::{describe_close, Peer};
use echostream_types::pairing::{self, code, DataHeader, Refusal};
use std::sync::atomic::Ordering;

/// The error of a stream whose connection ended.
pub(super) fn conn_lost(name: &str, e: &quinn::ConnectionError) -> StreamError {
    StreamError::ConnectionLost {
        stream: name.to_owned(),
        reason: describe_close(e).1,
    }
}

/// An accepted-by-policy stream waiting for its acceptor. If dropped before
/// it is completed (queue dropped, acceptor gone), both directions are
/// aborted with `NO_ACCEPTOR`, which the opener reports as "no acceptor".
pub(crate) struct Incoming {
    pub(crate) peer: Peer,
    pub(crate) header: DataHeader,
    pub(super) send: Option<quinn::SendStream>,
    pub(super) recv: Option<quinn::RecvStream>,
    /// Counted in the connection's accepted streams until an XStream takes the count.
    pub(super) count: bool,
}

impl Incoming {
    /// A data half just accepted, counted in the connection's accepted streams; its header
    /// is filled in once read.
    pub(super) fn new(peer: &Peer, send: quinn::SendStream, recv: quinn::RecvStream) -> Self {
        Incoming {
            peer: peer.clone(),
            header: DataHeader {
                id: 0,
                name: String::new(),
                metadata: echostream_types::Metadata::new(),
            },
            send: Some(send),
            recv: Some(recv),
            count: true,
        }
    }

    /// Opens the error half, answers "accepted", and makes the XStream.
    pub(crate) async fn complete(mut self) -> Result<(Peer, XStream), StreamError> {
        let name = self.header.name.clone();
        let st = self.peer.stream_state();
        let opts = st.registry.opts.clone();
        let conn = self.peer.quinn_connection().clone();
        let wait = opts.pairing_timeout;
        let mut err = match tokio::time::timeout(wait, conn.open_uni()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(conn_lost(&name, &e)),
            Err(_) => {
                return Err(StreamError::PairingTimeout {
                    stream: name,
                    missing: "credit to open the error half",
                    after: wait,
                })
            }
        };
        let map_write = |e: quinn::WriteError| match e {
            quinn::WriteError::ConnectionLost(e) => conn_lost(&name, &e),
            other => StreamError::Protocol {
                stream: name.clone(),
                detail: format!("while answering: {other}"),
            },
        };
        err.write_chunk(pairing::encode_error_header(self.header.id))
            .await
            .map_err(map_write)?;
        let (Some(mut send), Some(recv)) = (self.send.take(), self.recv.take()) else {
            return Err(StreamError::Protocol {
                stream: name,
                detail: "incoming stream completed twice".into(),
            });
        };
        if let Err(e) = send
            .write_chunk(bytes::Bytes::from_static(&[pairing::ANSWER_ACCEPTED]))
            .await
        {
            let _ = err.reset(code::PEER_DROPPED.into());
            return Err(map_write(e));
        }
        // From here the XStream owns the count.
        self.count = false;
        let peer = self.peer.clone();
        let s = XStream::new(
            name,
            self.header.id,
            Side::Acceptor,
            peer.clone(),
            std::mem::take(&mut self.header.metadata),
            opts,
            send,
            recv,
            ErrorHalfEnd::Send(err),
        );
        Ok((peer, s))
    }

    /// Tells the opener why its stream is refused, and drops it. Boxed: a rare path, and its
    /// future (about 500 bytes) would otherwise enlarge every incoming stream's task.
    pub(super) async fn refuse(self, refusal: Refusal, reason: &str) {
        crate::metrics::stream_refused(match refusal {
            Refusal::NoAcceptor => "no_acceptor",
            Refusal::Busy => "busy",
            Refusal::Rejected => "rejected",
            Refusal::BadHeader => "bad_header",
        });
        Box::pin(self.refuse_now(refusal, reason)).await
    }

    async fn refuse_now(mut self, refusal: Refusal, reason: &str) {
        if let Some(mut send) = self.send.take() {
            let _ = send.write_chunk(pairing::encode_refusal(refusal, reason)).await;
            let _ = send.finish();
        }
        if let Some(mut recv) = self.recv.take() {
            let _ = recv.stop(code::REFUSED.into());
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(s) = &mut self.send {
            let _ = s.reset(code::NO_ACCEPTOR.into());
        }
        if let Some(r) = &mut self.recv {
            let _ = r.stop(code::NO_ACCEPTOR.into());
        }
        if self.count {
            self.peer.stream_state().accepted.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
