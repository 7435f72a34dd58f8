//! Frame codec tests: round trips, the decoder's limit checks, property tests.
use super::*;
use proptest::prelude::*;

fn md() -> Metadata {
    Metadata::new()
        .with("token", "abc")
        .with("trace", vec![0u8, 1, 2])
}

fn samples() -> Vec<Frame> {
    let hello = Hello {
        version: 1,
        max_frame_size: 1 << 20,
        metadata: md(),
    };
    vec![
        Frame::Hello(hello.clone()),
        Frame::Welcome(Hello {
            metadata: Metadata::new(),
            ..hello
        }),
        Frame::Request(RequestFrame {
            id: 42,
            method: "user.login".into(),
            codec: Codec::Bincode,
            deadline: Some(Duration::from_millis(1500)),
            metadata: md(),
            payload: Bytes::from_static(b"\x05alice"),
        }),
        Frame::Request(RequestFrame {
            id: 3,
            method: "x".into(),
            codec: Codec::Json,
            deadline: None,
            metadata: Metadata::new(),
            payload: Bytes::new(),
        }),
        Frame::Response(ResponseFrame {
            id: 42,
            result: Ok((Codec::Json, Bytes::from_static(b"{}"))),
        }),
        Frame::Response(ResponseFrame {
            id: 43,
            result: Err(Status::new(Code(1001), "no such file").with_details(&b"d"[..])),
        }),
        Frame::Event(EventFrame {
            name: "user.logged_out".into(),
            codec: Codec::Bincode,
            metadata: Metadata::new(),
            payload: Bytes::from_static(&[7]),
        }),
        Frame::Event(EventFrame {
            name: "e".into(),
            codec: Codec::Unknown(9),
            metadata: md(),
            payload: Bytes::new(),
        }),
        Frame::Cancel { id: u64::MAX },
        Frame::Ping(1),
        Frame::Pong(2),
        Frame::TimeRequest {
            t1: 1_700_000_000_000_000_000,
        },
        Frame::TimeResponse {
            t1: 1,
            t2: 2,
            t3: u64::MAX,
        },
        Frame::GoAway {
            code: CloseCode::GOING_AWAY,
            reason: "server shutting down".into(),
        },
    ]
}

fn round_trip(f: &Frame) -> Frame {
    let mut buf = BytesMut::new();
    f.encode(&mut buf).unwrap();
    assert_eq!(buf.len(), f.encoded_len().unwrap());
    let dec = FrameDecoder::new(u32::MAX);
    let out = dec.decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    out
}

#[test]
fn every_frame_round_trips() {
    for f in samples() {
        assert_eq!(round_trip(&f), f, "{}", f.kind());
    }
}

#[test]
fn several_frames_in_one_buffer_decode_in_order() {
    let mut buf = BytesMut::new();
    for f in samples() {
        f.encode(&mut buf).unwrap();
    }
    let dec = FrameDecoder::new(1 << 20);
    let mut out = vec![];
    while let Some(f) = dec.decode(&mut buf).unwrap() {
        out.push(f);
    }
    assert_eq!(out, samples());
}

#[test]
fn every_truncation_is_incomplete_not_an_error() {
    let dec = FrameDecoder::new(1 << 20);
    for f in samples() {
        let mut full = BytesMut::new();
        f.encode(&mut full).unwrap();
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(dec.decode(&mut part).unwrap(), None);
            assert_eq!(part.len(), cut, "a partial frame stays buffered");
        }
    }
}

#[test]
fn truncated_body_with_honest_length_is_an_error() {
    // A request whose length covers only the id: the method is missing.
    let mut buf = BytesMut::new();
    buf.put_u32(9);
    buf.put_u8(ty::REQUEST);
    buf.put_u64(1);
    let err = FrameDecoder::new(100).decode(&mut buf).unwrap_err();
    assert_eq!(err, FrameError::Truncated("request flags"));
}

#[test]
fn oversized_length_is_refused_from_the_prefix_alone() {
    let mut buf = BytesMut::new();
    buf.put_u32(1_000_001);
    let err = FrameDecoder::new(1_000_000).decode(&mut buf).unwrap_err();
    assert_eq!(
        err,
        FrameError::TooLarge {
            declared: 1_000_001,
            limit: 1_000_000
        }
    );
}

#[test]
fn zero_length_and_unknown_type_are_errors() {
    let dec = FrameDecoder::new(100);
    let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
    assert!(matches!(dec.decode(&mut buf), Err(FrameError::Malformed(_))));
    let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 0x7F][..]);
    assert_eq!(dec.decode(&mut buf), Err(FrameError::UnknownType(0x7F)));
}

#[test]
fn metadata_count_larger_than_frame_is_refused_without_allocating() {
    let mut buf = BytesMut::new();
    buf.put_u32(9);
    buf.put_u8(ty::HELLO);
    buf.put_u16(1);
    buf.put_u32(100);
    buf.put_u16(u16::MAX);
    let err = FrameDecoder::new(100).decode(&mut buf).unwrap_err();
    assert_eq!(err, FrameError::Truncated("metadata"));
}

#[test]
fn invalid_utf8_method_is_an_error() {
    let mut buf = BytesMut::new();
    buf.put_u32(1 + 8 + 1 + 2 + 2 + 1);
    buf.put_u8(ty::REQUEST);
    buf.put_u64(1);
    buf.put_u8(0);
    buf.put_u16(2);
    buf.put_slice(&[0xFF, 0xFE]);
    buf.put_u8(1);
    let err = FrameDecoder::new(100).decode(&mut buf).unwrap_err();
    assert_eq!(err, FrameError::InvalidUtf8("method"));
}

#[test]
fn long_method_name_is_an_encode_error() {
    let f = Frame::Request(RequestFrame {
        id: 0,
        method: "m".repeat(70_000),
        codec: Codec::Json,
        deadline: None,
        metadata: Metadata::new(),
        payload: Bytes::new(),
    });
    assert!(matches!(
        f.encode(&mut BytesMut::new()),
        Err(FrameError::FieldTooLong { field: "method", .. })
    ));
}

#[test]
fn encode_split_returns_the_payload_uncopied() {
    let payload = Bytes::from(vec![9u8; 4096]);
    let f = Frame::Response(ResponseFrame {
        id: 1,
        result: Ok((Codec::Bincode, payload.clone())),
    });
    let mut head = BytesMut::new();
    let tail = f.encode_split(&mut head).unwrap();
    assert_eq!(tail.as_ptr(), payload.as_ptr());
    assert_eq!(head.len(), 4 + 1 + 8 + 1);
}

fn arb_metadata() -> impl Strategy<Value = Metadata> {
    proptest::collection::vec((".{0,8}", proptest::collection::vec(any::<u8>(), 0..8)), 0..4)
        .prop_map(|v| v.into_iter().collect())
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let payload = proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from);
    prop_oneof![
        (any::<u16>(), any::<u32>(), arb_metadata()).prop_map(|(version, max_frame_size, metadata)| {
            Frame::Hello(Hello {
                version,
                max_frame_size,
                metadata,
            })
        }),
        (
            any::<u64>(),
            ".{0,16}",
            any::<u8>(),
            proptest::option::of(any::<u32>()),
            arb_metadata(),
            payload.clone()
        )
            .prop_map(|(id, method, codec, deadline, metadata, payload)| {
                Frame::Request(RequestFrame {
                    id,
                    method,
                    codec: Codec::from_tag(codec),
                    deadline: deadline.map(|d| Duration::from_micros(u64::from(d))),
                    metadata,
                    payload,
                })
            }),
        (any::<u64>(), any::<u8>(), payload.clone()).prop_map(|(id, c, p)| {
            Frame::Response(ResponseFrame {
                id,
                result: Ok((Codec::from_tag(c), p)),
            })
        }),
        (any::<u64>(), any::<u32>(), ".{0,16}", payload.clone()).prop_map(|(id, c, m, d)| {
            Frame::Response(ResponseFrame {
                id,
                result: Err(Status::new(Code(c), m).with_details(d)),
            })
        }),
        (".{0,16}", any::<u8>(), arb_metadata(), payload).prop_map(|(name, c, metadata, payload)| {
            Frame::Event(EventFrame {
                name,
                codec: Codec::from_tag(c),
                metadata,
                payload,
            })
        }),
        any::<u64>().prop_map(|id| Frame::Cancel { id }),
        any::<u64>().prop_map(Frame::Ping),
        any::<u64>().prop_map(Frame::Pong),
        any::<u64>().prop_map(|t1| Frame::TimeRequest { t1 }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(t1, t2, t3)| Frame::TimeResponse {
            t1,
            t2,
            t3
        }),
        (any::<u32>(), ".{0,16}").prop_map(|(c, reason)| Frame::GoAway {
            code: CloseCode(c),
            reason
        }),
    ]
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(f in arb_frame()) {
        prop_assert_eq!(round_trip(&f), f);
    }

    #[test]
    fn a_borrowed_request_encodes_exactly_as_the_owned_one(f in arb_frame()) {
        if let Frame::Request(r) = &f {
            let mut owned = BytesMut::new();
            let owned_tail = f.encode_split_ref(&mut owned).unwrap().clone();
            let mut borrowed = BytesMut::new();
            let borrowed_tail = RequestRef::from(r).encode_split_ref(&mut borrowed).unwrap();
            prop_assert_eq!(&owned, &borrowed);
            prop_assert_eq!(&owned_tail, borrowed_tail);
        }
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let dec = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&data[..]);
        // Either frames, an incomplete tail, or an error: never a panic.
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
    }

    #[test]
    fn random_bodies_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = Frame::decode_body(Bytes::from(data));
    }
}
