//! The XStream pairing parser on arbitrary bytes (a data half as the
//! acceptor reads it: type byte, `len: u16`, body; plus the error-block
//! prefix and the status decoder): never panics, never allocates more than
//! the bytes present, and every header it accepts re-encodes to a header
//! that decodes to the same value.
#![no_main]
#![allow(dead_code)]

#[path = "../../src/stream/wire.rs"]
mod wire;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wire::{DataHeader, DATA_HALF, MAX_HEADER};

fuzz_target!(|data: &[u8]| {
    // The error-block prefix and the typed-stream status use the same input.
    if data.len() >= 5 {
        let prefix = [data[0], data[1], data[2], data[3], data[4]];
        if let Ok((_, len)) = wire::decode_error_prefix(prefix, 64 * 1024) {
            assert!(len <= 64 * 1024);
        }
    }
    let _ = wire::decode_status(data);
    let _ = wire::Refusal::from_code(data.first().copied().unwrap_or(0));

    // As `read_header` does: type byte, then a u16 length, then that many bytes.
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
    assert!(!h.name.is_empty() && h.name.len() <= wire::MAX_NAME);
    let bytes = h.encode().expect("a decoded header re-encodes");
    assert_eq!(bytes[0], DATA_HALF);
    let again = DataHeader::decode_body(bytes.slice(3..)).expect("a re-encoded header decodes");
    assert_eq!(&again, h);
}
