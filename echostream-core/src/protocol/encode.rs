//! Frame encoding for the writer: one buffer of exactly a frame's size, small payloads copied
//! in, large ones passed on uncopied.

use bytes::{Bytes, BytesMut};
use echostream_types::{Frame, FrameError};

/// Small frames are copied into one buffer; payloads above this size are passed to quinn as
/// their own chunk, uncopied.
pub(crate) const COPY_BELOW: usize = 4096;

/// Encodes `frame` as one buffer of exactly its size (a payload below [`COPY_BELOW`] copied
/// in, else returned apart, uncopied). One allocation per frame: encoding into a growing
/// buffer and freezing it took two (the buffer, and the shared header `Bytes` adds when the
/// capacity is not the length).
pub(crate) fn encode_frame(frame: &Frame) -> Result<(Bytes, Bytes), FrameError> {
    encode_with(|buf| frame.encode_split_ref(buf))
}

/// Runs `encode` (which writes a frame up to its payload and returns the payload) in the
/// thread's scratch buffer; returns the frame as (head, payload), small payloads copied into
/// the head.
pub(crate) fn encode_with<'a>(
    encode: impl FnOnce(&mut BytesMut) -> Result<&'a Bytes, FrameError>,
) -> Result<(Bytes, Bytes), FrameError> {
    thread_local! {
        // Scratch space reused by every frame encoded on this thread.
        static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
    }
    SCRATCH.with(|scratch| {
        let mut buf = scratch.borrow_mut();
        buf.clear();
        let tail = encode(&mut buf)?;
        let tail = if tail.len() < COPY_BELOW {
            buf.extend_from_slice(tail);
            Bytes::new()
        } else {
            tail.clone()
        };
        let head = Bytes::copy_from_slice(&buf);
        // A large frame's head stays small, but do not keep a buffer grown by an odd one.
        if buf.capacity() > 4 * COPY_BELOW {
            *buf = BytesMut::new();
        }
        Ok((head, tail))
    })
}
