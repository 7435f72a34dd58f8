//! Sending a file over a stream, with a progress bar, verified with SHA-256
//! at the receiver; and what a receiver-side failure looks like at the sender.
//!
//! ```text
//! cargo run --release --example file_transfer              # a generated 64 MiB file
//! cargo run --release --example file_transfer -- FILE     # your file
//! ```
//!
//! One process runs both ends over loopback QUIC:
//!
//! 1. the sender opens a stream named `files.upload` with the file's name,
//!    size and SHA-256 as metadata, and writes the file in 1 MiB chunks,
//!    with a progress bar;
//! 2. the receiver (the server) hashes what arrives while writing it to a
//!    scratch directory, and answers `ok` on the stream if the hash matches,
//!    or writes an error on the stream's error half if not;
//! 3. a file larger than the receiver's quota: the receiver stops it with
//!    "disk full" on the error half, and the sender's blocked write fails
//!    with that error at once (no silent loss, no clean end);
//! 4. a file name the receiver refuses (`../etc/passwd`): the decision
//!    policy rejects the stream and the sender's `open_stream` fails with
//!    the receiver's reason.

use bytes::Bytes;
use echostream::prelude::*;
use echostream::types::Metadata;
use echostream::ServerIdentity;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The receiver refuses files larger than this.
const QUOTA: u64 = 96 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let scratch = std::env::temp_dir().join(format!("echostream-file-transfer-{}", std::process::id()));
    tokio::fs::create_dir_all(&scratch).await?;
    let result = run(&scratch).await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    result
}

async fn run(scratch: &Path) -> std::result::Result<(), Box<dyn std::error::Error>> {
    // The file to send: the one named on the command line, or a generated one.
    let file = match std::env::args().nth(1) {
        Some(f) => PathBuf::from(f),
        None => {
            let f = scratch.join("generated.bin");
            generate(&f, 64 * 1024 * 1024).await?;
            f
        }
    };

    // --- The receiver ----------------------------------------------------
    let server = RpcServer::builder()
        .bind("127.0.0.1:0")
        .identity(ServerIdentity::Ephemeral)
        .build()?;
    let addr = server.local_addr().to_string();
    let fingerprint = server.fingerprint();
    let streams = server.streams();
    let mut uploads = streams.accept("files.upload")?;
    // Decide on each upload before taking it: refuse names that leave the directory.
    let mut requests = streams.approve_via_event();
    tokio::spawn(async move {
        while let Some(req) = requests.next().await {
            match req.metadata().get_str("name") {
                Some(name) if is_plain_name(name) => req.approve(),
                other => {
                    let name = other.unwrap_or("<none>").to_owned();
                    req.reject(format!("file name {name:?} is not a plain file name"))
                }
            }
        }
    });
    let dir = scratch.join("received");
    tokio::fs::create_dir_all(&dir).await?;
    tokio::spawn(async move {
        while let Some((peer, stream)) = uploads.next().await {
            let dir = dir.clone();
            tokio::spawn(async move {
                if let Err(e) = receive(stream, &dir).await {
                    eprintln!("receiver: upload from {} failed: {e}", peer.remote_addr());
                }
            });
        }
    });
    let shutdown = server.shutdown_handle();
    let server_task = tokio::spawn(server.run());

    // --- The sender ------------------------------------------------------
    let client = RpcClient::builder().pin(fingerprint).connect(&addr).await?;

    println!("1. sending {}", file.display());
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file.bin")
        .to_owned();
    match send(&client, &file, &name).await {
        Ok(answer) => println!("   receiver says: {answer}"),
        Err(e) => println!("   failed: {e}"),
    }

    println!("2. a file over the receiver's quota of {} MiB", QUOTA >> 20);
    let big = scratch.join("too-big.bin");
    generate(&big, QUOTA + 16 * 1024 * 1024).await?;
    match send(&client, &big, "too-big.bin").await {
        Ok(answer) => println!("   unexpected success: {answer}"),
        Err(e) => println!("   the sender learns why: {e}"),
    }
    let _ = tokio::fs::remove_file(&big).await;

    println!("3. a file name the receiver refuses");
    match send(&client, &file, "../etc/passwd").await {
        Ok(answer) => println!("   unexpected success: {answer}"),
        Err(e) => println!("   refused before any byte was sent: {e}"),
    }

    shutdown.shutdown();
    server_task.await??;
    Ok(())
}

/// Sends one file; returns the receiver's answer.
async fn send(
    client: &RpcClient,
    path: &Path,
    name: &str,
) -> std::result::Result<String, Box<dyn std::error::Error>> {
    let size = tokio::fs::metadata(path).await?.len();
    let hash = sha256_file(path).await?;
    let metadata = Metadata::new()
        .with("name", name.to_owned())
        .with("size", size.to_string())
        .with("sha256", hash.clone());
    let stream = client
        .streams()
        .open_stream_with(&client.peer(), "files.upload", metadata)
        .await?;
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("   {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")?
            .progress_chars("=> "),
    );
    let mut file = tokio::fs::File::open(path).await?;
    let started = std::time::Instant::now();
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        // A receiver-side error ends this write at once, with the receiver's message.
        if let Err(e) = stream.write_chunk(Bytes::from(buf)).await {
            bar.abandon();
            return Err(e.into());
        }
        bar.inc(n as u64);
    }
    stream.write_eof().await?;
    bar.finish();
    // The answer comes as data; an error would come from the error half instead.
    let answer = stream.read_to_end().await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "   {} MiB in {secs:.2} s ({:.0} MB/s), sha256 {hash}",
        size >> 20,
        size as f64 / secs / 1e6
    );
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// The receiver: writes the upload to `dir`, hashing it; answers `ok` or
/// reports the failure on the error half.
async fn receive(stream: XStream, dir: &Path) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let md = stream.metadata();
    let name = md.get_str("name").unwrap_or("unnamed").to_owned();
    let expected = md.get_str("sha256").unwrap_or("").to_owned();
    let path = dir.join(&name);
    let mut out = tokio::fs::File::create(&path).await?;
    let mut hash = Sha256::new();
    let mut received = 0u64;
    while let Some(chunk) = stream.read_chunk().await? {
        received += chunk.len() as u64;
        if received > QUOTA {
            drop(out);
            let _ = tokio::fs::remove_file(&path).await;
            let msg = format!("disk full: `{name}` exceeds the quota of {} MiB", QUOTA >> 20);
            // Without data flush: the error overtakes anything still queued.
            stream.error_write(msg.as_bytes(), false).await?;
            return Ok(());
        }
        hash.update(&chunk);
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    let got = hex(&hash.finalize());
    if got != expected {
        let msg = format!("checksum mismatch for `{name}`: expected {expected}, got {got}");
        stream.error_write(msg.as_bytes(), true).await?;
        return Ok(());
    }
    stream
        .write_all(format!("ok: `{name}` stored, {received} bytes, SHA-256 verified").as_bytes())
        .await?;
    stream.close().await?;
    Ok(())
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\'])
}

async fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(hex(&hash.finalize()));
        }
        hash.update(&buf[..n]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `size` bytes of pseudo-random data.
async fn generate(path: &Path, size: u64) -> std::io::Result<()> {
    let mut f = tokio::fs::File::create(path).await?;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut left = size;
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        for b in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = x.to_le_bytes();
            b.copy_from_slice(&v[..b.len()]);
        }
        let n = left.min(CHUNK as u64) as usize;
        f.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    f.flush().await
}
