//! EchoStream in one file: a server and a client in the same process.
//!
//! ```text
//! cargo run --example quickstart
//! RUST_LOG=debug cargo run --example quickstart   # to watch the connection's life
//! ```
//!
//! It starts a server on a free loopback port, connects a client that trusts
//! exactly that server, and walks through the basics, printing what is sent
//! and what comes back:
//!
//! 1. typed requests,
//! 2. a request returning a struct,
//! 3. a handler error, with the code the handler chose,
//! 4. an unknown method,
//! 5. a timeout,
//! 6. a call with several arguments, and the same call in JSON,
//! 7. a stream of audio frames, and an error coming back on the stream's
//!    error half,
//! 8. a graceful shutdown.
//!
//! The server uses a throw-away identity, so running this writes no files.

use echostream::prelude::*;

use echostream::{Codec, ServerIdentity};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What `user.login` returns. Any serde type can be an argument or a result.
#[derive(Debug, Serialize, Deserialize)]
struct Session {
    user: String,
    token: u64,
}

/// An application error code. Codes from 1000 (`Code::APPLICATION`) up are
/// free for applications; lower ones belong to the framework.
const INVALID_USER_NAME: Code = Code(1001);

// Handlers are plain `async fn`s. The attribute names the method a client
// calls, and turns the function into a value for `.handler(..)`.

/// `greet`: a `String` in, a `String` out.
#[echostream::handler("greet")]
async fn greet(_ctx: Context, name: String) -> Result<String> {
    Ok(format!("Hello, {name}!"))
}

/// `audio.play`: a handler with nothing to return.
#[echostream::handler("audio.play")]
async fn play(_ctx: Context, file: String) -> Result<()> {
    tracing::info!(%file, "playing");
    Ok(())
}

/// `user.login`: returns a struct, or an error with a chosen code.
#[echostream::handler("user.login")]
async fn login(_ctx: Context, username: String) -> Result<Session> {
    if username.trim().is_empty() {
        // The client receives this code and message as `Error::Remote`.
        return Err(Error::with_code(INVALID_USER_NAME, "the user name is empty"));
    }
    // `_ctx` knows about the call: method, caller address, metadata, deadline.
    Ok(Session {
        user: username,
        token: 42,
    })
}

/// `math.add`: several parameters arrive as one tuple, `(a, b)`.
#[echostream::handler("math.add")]
async fn add(_ctx: Context, a: i64, b: i64) -> Result<i64> {
    Ok(a + b)
}

/// `slow`: sleeps before answering. The `Context` parameter is optional.
#[echostream::handler("slow")]
async fn slow(millis: u64) -> Result<u64> {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    Ok(millis)
}

/// `audio.stream`: a stream handler. It receives frames until the sender
/// finishes; its error (here: an empty frame) reaches the sender.
#[echostream::stream_handler("audio.stream")]
async fn audio_stream(_ctx: Context, stream: StreamReceiver) -> Result<()> {
    let mut frames = 0;
    while let Some(frame) = stream.recv().await {
        if frame.is_empty() {
            // Written on the stream's error half: the sender gets it as
            // `Error::Remote` on its next send or on `finish()`.
            return Err(Error::with_code(EMPTY_FRAME, format!("frame {frames} is empty")));
        }
        frames += 1;
    }
    println!("   (server: played {frames} frames)");
    Ok(())
}

/// The code `audio.stream` fails with.
const EMPTY_FRAME: Code = Code(1002);

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    // Warnings only, unless RUST_LOG says otherwise (e.g. RUST_LOG=debug).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    // --- The server ------------------------------------------------------
    // Port 0 picks a free port. `Ephemeral` makes a new self-signed
    // certificate in memory; a real server keeps a persistent identity
    // (the default) so clients recognise it across restarts.
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .handler(greet)
        .handler(play)
        .handler(login)
        .handler(add)
        .handler(slow)
        .stream_handler(audio_stream)
        .build()?;
    let addr = server.local_addr().to_string();
    let fingerprint = server.fingerprint();
    let shutdown = server.shutdown_handle();
    let server_task = tokio::spawn(server.run());
    println!("server listening on {addr}");
    println!("server certificate: sha256:{fingerprint}");

    // --- The client ------------------------------------------------------
    // Every connection is TLS 1.3. The client trusts exactly the certificate
    // with this fingerprint (by default it would trust on first use and
    // remember the server in a known-hosts file, like SSH).
    let client = RpcClient::builder().pin(fingerprint).connect(&addr).await?;
    println!("client connected, pinned to that fingerprint\n");

    // 1. A typed request: the argument and the result are serde types.
    println!("1. typed requests");
    println!("   -> greet(\"world\")");
    let greeting: String = client.request("greet", "world").await?;
    println!("   <- {greeting:?}");
    println!("   -> audio.play(\"music.mp3\")");
    // The result type comes from the variable it goes into. A handler that
    // returns `Result<()>` leaves nothing to infer it from, so say `()`:
    let () = client.request("audio.play", "music.mp3").await?;
    println!("   <- ()");

    // 2. The result type is whatever the caller asks for; here the handler's
    //    struct. ("alice" is a &str; the handler takes a String: both
    //    serialise the same way.)
    println!("2. a request returning a struct");
    println!("   -> user.login(\"alice\")");
    let session: Session = client.request("user.login", "alice").await?;
    println!("   <- {session:?}");

    // 3. A handler's error arrives as `Error::Remote`, with its code and message.
    println!("3. a handler error");
    println!("   -> user.login(\"\")");
    match client.request::<_, Session>("user.login", "").await {
        Err(Error::Remote { method, status }) => {
            println!(
                "   <- `{method}` failed: code {}, message {:?}",
                status.code(),
                status.message()
            );
            if status.code() == INVALID_USER_NAME {
                println!("      (the application's own code, set with Error::with_code)");
            }
        }
        other => return Err(format!("expected a remote error, got {other:?}").into()),
    }

    // 4. Calling a method nobody registered.
    println!("4. an unknown method");
    println!("   -> user.logout(\"alice\")");
    match client.request::<_, ()>("user.logout", "alice").await {
        Err(Error::UnknownMethod { method }) => {
            println!("   <- the server has no method `{method}`")
        }
        other => return Err(format!("expected an unknown-method error, got {other:?}").into()),
    }

    // 5. A deadline: the call gives up after 200 ms, and the server cancels
    //    the handler (the deadline travels with the request).
    println!("5. a timeout");
    println!("   -> slow(5000), with a 200 ms timeout");
    let opts = CallOptions::new().timeout(Duration::from_millis(200));
    match client.request_with::<_, u64>("slow", 5000u64, opts).await {
        Err(Error::Timeout { method, after }) => {
            println!("   <- `{method}` timed out after {after:?}")
        }
        other => return Err(format!("expected a timeout, got {other:?}").into()),
    }

    // 6. Several arguments travel as a tuple. The default codec is bincode;
    //    JSON is one option away, for the same handler.
    println!("6. several arguments, and JSON");
    println!("   -> math.add(2, 40)");
    let sum: i64 = client.request("math.add", (2i64, 40i64)).await?;
    println!("   <- {sum}");
    println!("   -> math.add(2, 40), encoded as JSON");
    let json = CallOptions::new().codec(Codec::Json);
    let sum: i64 = client.request_with("math.add", (2i64, 40i64), json).await?;
    println!("   <- {sum}");

    // 7. A stream: long-lived, in order, with its own error half. Frames are
    //    any serde type; plain `Vec<u8>` here.
    println!("7. a stream, and its error half");
    println!("   -> audio.stream: 3 frames of 960 bytes");
    let stream = client.create_stream("audio.stream").await?;
    for _ in 0..3 {
        let audio_frame = vec![0u8; 960];
        stream.send(audio_frame).await?;
    }
    stream.finish().await?;
    println!("   <- finished cleanly");
    println!("   -> audio.stream: a frame, then an empty one");
    let stream = client.create_stream("audio.stream").await?;
    stream.send(vec![1u8; 960]).await?;
    stream.send(Vec::<u8>::new()).await?;
    match stream.finish().await {
        Err(Error::Remote { method, status }) => {
            println!(
                "   <- `{method}` failed on the server: code {}, {:?}",
                status.code(),
                status.message()
            )
        }
        other => return Err(format!("expected the stream's error, got {other:?}").into()),
    }

    // 8. Graceful shutdown: the server stops accepting, lets calls in flight
    //    finish, then closes every connection.
    println!("8. a graceful shutdown");
    shutdown.shutdown();
    server_task.await??;
    println!("   server stopped");
    match client.request::<_, String>("greet", "anyone?").await {
        Err(e) => println!("   a call now fails: {e}"),
        Ok(reply) => return Err(format!("expected the call to fail, got {reply:?}").into()),
    }
    Ok(())
}
