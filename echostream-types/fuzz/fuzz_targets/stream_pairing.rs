//! The XStream pairing formats on arbitrary bytes: the data half's header as the acceptor reads
//! it (type byte, `len: u16`, body), the refusal answer, the error-block prefix and the status of
//! typed streams. Never panics, never allocates more than the bytes present, and every header it
//! accepts re-encodes to a header that decodes to the same value.
#![no_main]

use bytes::Bytes;
use echostream_types::message::decode_status;
use echostream_types::pairing::{
    decode_error_prefix, decode_refusal_prefix, DataHeader, DATA_HALF, MAX_HEADER, MAX_NAME, MAX_REASON,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The error-block prefix, the refusal prefix and the typed-stream status use the same input.
    if data.len() >= 5 {
        let prefix = [data[0], data[1], data[2], data[3], data[4]];
        if let Ok((_, len)) = decode_error_prefix(prefix, 64 * 1024) {
            assert!(len <= 64 * 1024);
        }
        if let Ok((_, len)) = decode_refusal_prefix([data[0], data[1], data[2]]) {
            assert!(len <= MAX_REASON);
        }
    }
    let _ = decode_status(data);

    // As the acceptor reads it: type byte, then a u16 length, then that many bytes.
    if data.len() < 3 || data[0] != DATA_HALF {
        // Also feed the raw bytes as a body.
        if let Ok(h) = DataHeader::decode_body(Bytes::copy_from_slice(data)) {
            check_round_trip(&h);
        }
        return;
    }
    let len = u16::from_be_bytes([data[1], data[2]]) as usize;
    assert!(len <= MAX_HEADER);
    let Some(body) = data.get(3..3 + len) else {
        return;
    };
    if let Ok(h) = DataHeader::decode_body(Bytes::copy_from_slice(body)) {
        check_round_trip(&h);
    }
});

fn check_round_trip(h: &DataHeader) {
    assert!(!h.name.is_empty() && h.name.len() <= MAX_NAME);
    let bytes = h.encode().expect("a decoded header re-encodes");
    assert_eq!(bytes[0], DATA_HALF);
    let again = DataHeader::decode_body(bytes.slice(3..)).expect("a re-encoded header decodes");
    assert_eq!(&again, h);
}
