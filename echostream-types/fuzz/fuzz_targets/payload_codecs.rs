//! Every payload codec on arbitrary bytes, into the shapes handlers use: never panics, never
//! allocates from a claimed length.
#![no_main]

use echostream_types::Codec;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use std::collections::HashMap;

#[derive(Deserialize, Debug)]
#[allow(dead_code)]
struct Session {
    user: String,
    id: u64,
    roles: Vec<String>,
    extra: Option<HashMap<String, Vec<u8>>>,
    kind: Kind,
}

#[derive(Deserialize, Debug)]
#[allow(dead_code)]
enum Kind {
    A,
    B(i32),
    C { x: f64, y: Vec<(u8, String)> },
}

fuzz_target!(|data: &[u8]| {
    let Some((&tag, payload)) = data.split_first() else {
        return;
    };
    for codec in [Codec::Bincode, Codec::Json, Codec::from_tag(tag)] {
        let _ = codec.decode::<String>(payload);
        let _ = codec.decode::<Vec<u64>>(payload);
        let _ = codec.decode::<(u64, String, bool)>(payload);
        let _ = codec.decode::<Session>(payload);
        let _ = codec.decode::<HashMap<String, Vec<Kind>>>(payload);
        let _ = codec.decode::<()>(payload);
    }
});
