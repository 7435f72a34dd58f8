//! Typed message streams: `#[stream_handler]`, `create_stream`, errors from
//! the acceptor reaching the sender, oversized and undecodable messages.

mod common;
mod streams_common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::handler_fn;
use echostream::stream::{stream_handler_fn, StreamDuplex, StreamError, StreamOptions};
use echostream::Codec;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;
use streams_common::*;
use tokio::sync::mpsc;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct AudioFrame {
    seq: u32,
    samples: Vec<i16>,
}

static RAW_FRAMES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// The mission's sketch, as written: no type parameter means raw byte frames.
#[echostream::stream_handler("audio.stream")]
async fn handle_audio_stream(ctx: Context, stream: StreamReceiver) {
    assert_eq!(ctx.method(), "audio.stream");
    while let Some(frame) = stream.recv().await {
        RAW_FRAMES.lock().unwrap().push(frame);
    }
}

static TYPED_FRAMES: Mutex<Vec<(u32, Option<String>)>> = Mutex::new(Vec::new());

/// A typed receiver, and a handler that fails on a frame it dislikes.
#[echostream::stream_handler("audio.typed")]
async fn typed_audio(ctx: Context, stream: StreamReceiver<AudioFrame>) -> Result<()> {
    let codec = ctx.metadata().get_str("codec").map(str::to_owned);
    while let Some(frame) = stream.recv().await {
        if frame.seq == 13 {
            return Err(Error::with_code(Code(4013), "frame 13 is unlucky"));
        }
        TYPED_FRAMES.lock().unwrap().push((frame.seq, codec.clone()));
    }
    Ok(())
}

#[tokio::test]
async fn sketch_stream_handler_receives_vec_u8_frames() {
    init_tracing();
    let srv = serve_streams(RpcServer::builder().stream_handler(handle_audio_stream));
    let client = connect(&srv.server).await;
    let stream = client.create_stream("audio.stream").await.unwrap();
    for i in 0..10u8 {
        let audio_frame: Vec<u8> = vec![i; 960];
        stream.send(audio_frame).await.unwrap();
    }
    bounded("finish", stream.finish()).await.unwrap();
    let frames = RAW_FRAMES.lock().unwrap().clone();
    assert_eq!(frames.len(), 10);
    assert!(frames.iter().enumerate().all(|(i, f)| f == &vec![i as u8; 960]));
    assert_eq!(handle_audio_stream::STREAM, "audio.stream");
    eventually("server stream released", || srv.streams.open_count() == 0).await;
}

#[tokio::test]
async fn typed_frames_with_metadata_and_a_handler_error_reaches_the_sender() {
    init_tracing();
    let srv = serve_streams(RpcServer::builder().register_all());
    let client = connect(&srv.server).await;
    let stream = client
        .create_stream("audio.typed")
        .with_metadata("codec", "opus")
        .build()
        .await
        .unwrap();
    for seq in 1..=3 {
        let f = AudioFrame {
            seq,
            samples: vec![1, -1],
        };
        stream.send(&f).await.unwrap();
    }
    stream
        .send(AudioFrame {
            seq: 13,
            samples: vec![],
        })
        .await
        .unwrap();
    // The handler's error arrives on a later send, or on finish: never silently dropped.
    let mut err = None;
    for seq in 14..10_000 {
        if let Err(e) = stream
            .send(AudioFrame {
                seq,
                samples: vec![0; 64],
            })
            .await
        {
            err = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let err = match err {
        Some(e) => e,
        None => stream.finish().await.unwrap_err(),
    };
    match err {
        Error::Remote { method, status } => {
            assert_eq!(method, "audio.typed");
            assert_eq!(status.code(), Code(4013));
            assert_eq!(status.message(), "frame 13 is unlucky");
        }
        other => panic!("expected the handler's error, got {other:?}"),
    }
    let got = TYPED_FRAMES.lock().unwrap().clone();
    assert_eq!(
        got,
        (1..=3).map(|s| (s, Some("opus".to_owned()))).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn finish_reports_an_error_written_after_the_last_message() {
    init_tracing();
    let handler = stream_handler_fn("count", |_ctx: Context, s: StreamReceiver<u32>| async move {
        let mut n = 0;
        while let Some(_v) = s.recv().await {
            n += 1;
        }
        // An explicit error after the sender finished.
        let _ = s
            .fail(Status::new(Code(4100), format!("expected 5 values, got {n}")))
            .await;
    });
    let srv = serve_streams(RpcServer::builder().stream_handler(handler));
    let client = connect(&srv.server).await;
    let s = client.create_stream("count").await.unwrap();
    for v in 0..3u32 {
        s.send(v).await.unwrap();
    }
    match bounded("finish", s.finish()).await {
        Err(Error::Remote { status, .. }) => {
            assert_eq!(status.code(), Code(4100));
            assert_eq!(status.message(), "expected 5 values, got 3");
        }
        other => panic!("expected the acceptor's error on finish, got {other:?}"),
    }
}

#[tokio::test]
async fn too_large_message_ends_only_that_stream_with_clear_errors_on_both_sides() {
    init_tracing();
    let (tx, mut rx) = mpsc::channel::<String>(4);
    let handler = stream_handler_fn("blobs", move |_ctx: Context, s: StreamReceiver| {
        let tx = tx.clone();
        async move {
            loop {
                match s.try_recv().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(e.to_string()).await;
                        break;
                    }
                }
            }
        }
    });
    let srv = serve_streams(
        RpcServer::builder()
            .stream_options(StreamOptions::new().max_message_size(1024))
            .stream_handler(handler)
            .handler(handler_fn("ping", |_c: Context, _: ()| async {
                Ok::<_, Error>("pong")
            })),
    );
    let client = connect(&srv.server).await;
    let healthy = client.create_stream("blobs").await.unwrap();
    healthy.send(vec![0u8; 100]).await.unwrap();

    let s = client.create_stream("blobs").await.unwrap();
    s.send(vec![0u8; 100]).await.unwrap();
    s.send(vec![0u8; 4096]).await.unwrap();
    let receiver_side = bounded("receiver error", rx.recv()).await.unwrap();
    assert!(
        receiver_side.contains("blobs") && receiver_side.contains("limit of 1024 bytes"),
        "{receiver_side}"
    );
    let sender_side = match bounded("finish", s.finish()).await {
        Err(e) => e,
        Ok(()) => panic!("the sender must learn that its message was refused"),
    };
    match &sender_side {
        Error::Remote { method, status } => {
            assert_eq!(method, "blobs");
            assert_eq!(status.code(), Code::RESOURCE_EXHAUSTED);
            assert!(status.message().contains("limit of 1024 bytes"), "{status}");
        }
        other => panic!("expected the receiver's error, got {other:?}"),
    }
    // Only that stream ended: the other stream and calls still work.
    healthy.send(vec![1u8; 100]).await.unwrap();
    bounded("healthy finish", healthy.finish()).await.unwrap();
    let pong: String = client.request("ping", ()).await.unwrap();
    assert_eq!(pong, "pong");

    // The sender refuses locally too, past its own limit, and says so.
    let client2 = client_for(&srv.server)
        .stream_options(StreamOptions::new().max_message_size(512))
        .connect(&srv.server.addr)
        .await
        .unwrap();
    let s = client2.create_stream("blobs").await.unwrap();
    match s.send(vec![0u8; 600]).await {
        Err(Error::Stream(e @ StreamError::TooLarge { .. })) => {
            assert!(e.to_string().contains("limit of 512 bytes"), "{e}")
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let receiver_side = bounded("receiver sees the abort", rx.recv()).await.unwrap();
    assert!(
        receiver_side.contains("larger than the receiver's limit"),
        "{receiver_side}"
    );
}

#[tokio::test]
async fn undecodable_message_ends_the_stream_with_bad_payload() {
    init_tracing();
    let handler = stream_handler_fn("numbers", |_ctx: Context, s: StreamReceiver<u64>| async move {
        while let Some(_n) = s.recv().await {}
    });
    let srv = serve_streams(RpcServer::builder().stream_handler(handler));
    let client = connect(&srv.server).await;
    let s = client
        .create_stream("numbers")
        .with_codec(Codec::Json)
        .await
        .unwrap();
    s.send(7u64).await.unwrap();
    s.send("not a number").await.unwrap();
    match bounded("finish", s.finish()).await {
        Err(Error::Remote { status, .. }) => {
            assert_eq!(status.code(), Code::BAD_PAYLOAD);
            assert!(
                status.message().contains("message 2 did not decode as u64"),
                "{status}"
            );
        }
        other => panic!("expected BAD_PAYLOAD, got {other:?}"),
    }
}

#[tokio::test]
async fn duplex_streams_carry_messages_both_ways() {
    init_tracing();
    let upper = stream_handler_fn("upper", |_ctx: Context, s: StreamDuplex<String>| async move {
        while let Some(text) = s.recv().await {
            s.send(text.to_uppercase()).await?;
        }
        Ok::<_, Error>(())
    });
    let srv = serve_streams(RpcServer::builder().stream_handler(upper));
    let client = connect(&srv.server).await;
    let d = client
        .create_stream("upper")
        .build_duplex::<String>()
        .await
        .unwrap();
    for word in ["hello", "duplex"] {
        d.send(word).await.unwrap();
        assert_eq!(bounded("echo", d.recv()).await.unwrap(), word.to_uppercase());
    }
    d.finish_sending().await.unwrap();
    assert_eq!(bounded("end", d.try_recv()).await.unwrap(), None);
}

static CLIENT_SIDE: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[echostream::stream_handler("client.notes")]
async fn client_notes(stream: StreamReceiver<String>) {
    while let Some(n) = stream.recv().await {
        CLIENT_SIDE.lock().unwrap().push(n);
    }
}

#[tokio::test]
async fn a_client_stream_handler_accepts_streams_the_server_opens() {
    init_tracing();
    let srv = serve_streams(RpcServer::builder().handler(handler_fn(
        "notify.me",
        |ctx: Context, n: u32| async move {
            let s = ctx.peer().create_stream("client.notes").await?;
            for i in 0..n {
                s.send(format!("note {i}")).await?;
            }
            s.finish().await?;
            Ok::<_, Error>(())
        },
    )));
    let client = client_for(&srv.server)
        .stream_handler(client_notes)
        .connect(&srv.server.addr)
        .await
        .unwrap();
    let () = bounded("call", client.request("notify.me", 3u32)).await.unwrap();
    assert_eq!(
        CLIENT_SIDE.lock().unwrap().clone(),
        vec!["note 0", "note 1", "note 2"]
    );
}
