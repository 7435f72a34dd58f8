//! The typed-message decoder on arbitrary bytes: never panics, never buffers past the limit,
//! and every message it yields re-frames to bytes that decode to the same message.
#![no_main]

use bytes::BytesMut;
use echostream_types::message::{encode_head, MessageDecoder};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // First byte picks how the input is split into reads, to exercise incremental decoding.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(split % 16) + 1;
    let decoder = MessageDecoder::new(LIMIT);
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(msg)) => {
                    let head = encode_head(msg.codec, msg.timestamp, msg.payload.len())
                        .expect("a decoded message re-frames");
                    let mut out = BytesMut::from(&head[..]);
                    out.extend_from_slice(&msg.payload);
                    let again = MessageDecoder::new(LIMIT).decode(&mut out);
                    assert_eq!(again.ok().flatten().as_ref(), Some(&msg));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= LIMIT + 4 + 16, "buffered {} bytes", buf.len());
    }
});
