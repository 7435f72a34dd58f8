//! The control-stream decoder on arbitrary bytes: never panics, never buffers past the limit,
//! and every frame it yields re-encodes to a frame that decodes to the same value.
#![no_main]

use bytes::BytesMut;
use echostream_types::{Frame, FrameDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte picks how the input is split into reads, to exercise incremental decoding.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(split % 16) + 1;
    let decoder = FrameDecoder::new(64 * 1024);
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let mut out = BytesMut::new();
                    if frame.encode(&mut out).is_ok() {
                        let again = FrameDecoder::new(u32::MAX).decode(&mut out);
                        assert_eq!(again.ok().flatten().as_ref(), Some(&frame));
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= 64 * 1024 + 4 + 16, "buffered {} bytes", buf.len());
    }
    // The body decoder alone, on the raw input.
    let _ = Frame::decode_body(bytes::Bytes::copy_from_slice(rest));
});
