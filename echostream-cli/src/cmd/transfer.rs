//! `send` and `receive`: a file over one XStream, checked with SHA-256 at both ends, resumable.
//!
//! The exchange, on a stream the sender opens:
//! 1. stream metadata `name` (a plain file name), `size` (bytes), `sha256` (hex, of the whole
//!    file) and `resume` (`1` when the sender can continue a partial transfer). The receiver's
//!    decision refuses a bad name, a file that exists, a size over its limit, or a name already
//!    being received; the sender's open fails with that reason.
//! 2. the receiver writes 8 bytes, big-endian: the offset it wants data from (the length of its
//!    partial file `.NAME.part` when resuming, else 0);
//! 3. the sender writes the file from that offset, then ends its data (EOF);
//! 4. the receiver hashes the partial file's bytes and the new ones, and on a full, matching
//!    file renames `.NAME.part` to `NAME` and answers `ok sha256:HEX` as data. Anything else
//!    (short data, more data than announced, a checksum mismatch, a write error such as a full
//!    disk) goes on the error half, which the sender shows. A transfer cut short (Ctrl-C, a lost
//!    connection) keeps `.NAME.part` for the next attempt, never a file under the final name.

use super::ctrl_c;
use crate::args::{ReceiveArgs, SendArgs};
use crate::connect::connect;
use crate::exit::{Class, Failure};
use crate::output;
use bytes::Bytes;
use echostream::stream::StreamError;
use echostream::types::Metadata;
use echostream::{RpcServer, ServerIdentity, XStream};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;

const CHUNK: usize = 256 * 1024;

pub(crate) async fn send(a: SendArgs, json: bool) -> Result<(), Failure> {
    let path = &a.file;
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| Failure::other(format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(Failure::other(format!("{} is not a file", path.display())));
    }
    let size = meta.len();
    let name = match &a.name {
        Some(n) => n.clone(),
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                Failure::other(format!(
                    "{} has no usable file name; pass --as NAME",
                    path.display()
                ))
            })?
            .to_owned(),
    };
    let show = !a.quiet && !json;
    let hash = sha256_file(path, show)
        .await
        .map_err(|e| Failure::other(format!("cannot read {}: {e}", path.display())))?;
    let client = connect(&a.target).await?;
    let metadata = Metadata::new()
        .with("name", name.clone())
        .with("size", size.to_string())
        .with("sha256", hash.clone())
        .with("resume", if a.no_resume { "0" } else { "1" });
    let started = std::time::Instant::now();
    let stream = client
        .streams()
        .open_stream_with(&client.peer(), &a.stream, metadata)
        .await
        .map_err(|e| {
            let f = Failure::from(e);
            if f.class == Class::UnknownMethod {
                f.hint(format!(
                    "the server accepts no stream `{}`; is it an `echostream receive`?",
                    a.stream
                ))
            } else {
                f
            }
        })?;
    let bar = progress(size, show);
    let mut sent = 0u64;
    let result = tokio::select! {
        r = push(&stream, path, size, &bar, &mut sent) => r,
        _ = ctrl_c() => {
            bar.abandon();
            // Dropping the stream resets it: the receiver keeps its partial file.
            drop(stream);
            client.close().await;
            return Err(Failure::interrupted(format!(
                "sent {sent} of {size} bytes of {name}; the receiver keeps the partial file, so the same command \
                 resumes"
            )));
        }
    };
    let outcome = match result {
        Ok(offset) => {
            bar.finish_and_clear();
            check_answer(&stream, &hash).await.map(|()| offset)
        }
        Err(e) => {
            bar.abandon();
            Err(e)
        }
    };
    drop(stream);
    client.close().await;
    let offset = outcome?;
    let secs = started.elapsed().as_secs_f64();
    let moved = size - offset;
    if json {
        output::json_line(&serde_json::json!({
            "name": name, "size": size, "sha256": hash, "resumed_from": offset,
            "bytes_sent": moved, "seconds": secs,
        }));
    } else {
        let resumed = if offset > 0 {
            format!(" (resumed at byte {offset})")
        } else {
            String::new()
        };
        println!(
            "{} {name}: {size} bytes{resumed} in {secs:.2} s ({:.1} MB/s), sha256 {hash} verified by the receiver",
            output::green("sent"),
            moved as f64 / secs.max(1e-9) / 1e6,
        );
    }
    Ok(())
}

/// Reads the receiver's offset and writes the file from there; returns the offset.
async fn push(
    stream: &XStream,
    path: &Path,
    size: u64,
    bar: &ProgressBar,
    sent: &mut u64,
) -> Result<u64, Failure> {
    let mut head = [0u8; 8];
    stream.read_exact(&mut head).await.map_err(Failure::from)?;
    let offset = u64::from_be_bytes(head);
    if offset > size {
        return Err(Failure::new(
            Class::Transfer,
            format!("the receiver asked for data from byte {offset} of a {size}-byte file"),
        ));
    }
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Failure::other(format!("cannot open {}: {e}", path.display())))?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| Failure::other(format!("cannot seek in {}: {e}", path.display())))?;
    bar.set_position(offset);
    *sent = offset;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| Failure::other(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        // A receiver-side error (full disk, quota) ends this write at once with its message.
        stream
            .write_chunk(Bytes::from(buf))
            .await
            .map_err(Failure::from)?;
        *sent += n as u64;
        bar.set_position(*sent);
    }
    if *sent != size {
        return Err(Failure::other(format!(
            "{} changed while it was sent ({} bytes instead of {size})",
            path.display(),
            *sent
        )));
    }
    stream.write_eof().await.map_err(Failure::from)?;
    Ok(offset)
}

/// The receiver's answer: `ok sha256:HEX` matching ours, or its error from the error half.
async fn check_answer(stream: &XStream, hash: &str) -> Result<(), Failure> {
    let answer = stream.read_to_end().await.map_err(Failure::from)?;
    let answer = String::from_utf8_lossy(&answer);
    match answer.strip_prefix("ok sha256:") {
        Some(theirs) if theirs.trim() == hash => Ok(()),
        Some(theirs) => Err(Failure::new(
            Class::Transfer,
            format!("the receiver stored a file with sha256 {theirs}, but this one has {hash}"),
        )),
        None => Err(Failure::new(
            Class::Transfer,
            format!("unexpected answer from the receiver: {answer:?}"),
        )),
    }
}

fn progress(size: u64, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn sha256_file(path: &Path, show: bool) -> std::io::Result<String> {
    let mut f = tokio::fs::File::open(path).await?;
    let size = f.metadata().await?.len();
    let bar = progress(size, show && size > 64 * 1024 * 1024);
    bar.set_message("hashing");
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            bar.finish_and_clear();
            return Ok(hex::encode(hash.finalize()));
        }
        hash.update(&buf[..n]);
        bar.inc(n as u64);
    }
}

/// What one finished (or failed) transfer reports to the receiving loop.
struct Done {
    name: String,
    peer: echostream::Peer,
    result: Result<u64, String>,
}

pub(crate) async fn receive(a: ReceiveArgs, json: bool) -> Result<(), Failure> {
    tokio::fs::create_dir_all(&a.dir)
        .await
        .map_err(|e| Failure::other(format!("cannot create {}: {e}", a.dir.display())))?;
    let mut builder = RpcServer::builder()
        .bind(&a.bind)
        .identity(ServerIdentity::persistent(a.identity.clone()));
    if let Some(name) = &a.announce {
        builder = builder.enable_discovery(name.clone());
    }
    let server = builder.build().map_err(Failure::from)?;
    let streams = server.streams();
    let mut uploads = streams.accept(&a.stream).map_err(Failure::from)?;
    let mut requests = streams.approve_via_event();
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let policy = Policy {
        dir: a.dir.clone(),
        max_size: a.max_size,
        overwrite: a.overwrite,
        busy: busy.clone(),
    };
    tokio::spawn(async move {
        while let Some(req) = requests.recv().await {
            match policy.check(req.metadata()) {
                Ok(()) => req.approve(),
                Err(reason) => {
                    tracing::info!(peer = %req.peer().remote_addr(), reason, "upload refused");
                    req.reject(reason)
                }
            }
        }
    });
    let addr = server.local_addr();
    let fingerprint = server.fingerprint();
    if json {
        output::json_line(&serde_json::json!({
            "listening": addr.to_string(), "stream": a.stream, "fingerprint": format!("sha256:{fingerprint}"),
            "dir": a.dir,
        }));
    } else {
        println!(
            "receiving stream `{}` on {addr} into {} (fingerprint sha256:{fingerprint}); Ctrl-C to stop",
            a.stream,
            a.dir.display()
        );
    }
    let shutdown = server.shutdown_handle();
    let mut server_task = tokio::spawn(server.run());
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(16);
    let result = loop {
        tokio::select! {
            incoming = uploads.next_stream() => {
                let Some((peer, stream)) = incoming else { break Ok(()) };
                let dir = a.dir.clone();
                let (busy, overwrite, done) = (busy.clone(), a.overwrite, done_tx.clone());
                tokio::spawn(async move {
                    let name = stream.metadata().get_str("name").unwrap_or_default().to_owned();
                    let result = store(&stream, &dir, overwrite).await;
                    busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
                    let _ = done.send(Done { name, peer, result }).await;
                });
            }
            Some(done) = done_rx.recv() => {
                report(&done, json);
                if a.once {
                    // Let the sender read the answer and close its side first (bounded).
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), done.peer.closed()).await;
                    break done.result.map(|_| ()).map_err(|e| Failure::new(Class::Transfer, e));
                }
            }
            ended = &mut server_task => {
                break match ended {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(Failure::from(e)),
                    Err(e) => Err(Failure::other(format!("the server task failed: {e}"))),
                };
            }
            _ = ctrl_c() => break Ok(()),
        }
    };
    shutdown.shutdown();
    // Graceful: connections are told the server goes away before the process exits.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server_task).await;
    result
}

fn report(done: &Done, json: bool) {
    let from = done.peer.remote_addr();
    match (&done.result, json) {
        (Ok(bytes), true) => output::json_line(&serde_json::json!({
            "received": done.name, "from": from.to_string(), "bytes": bytes, "ok": true,
        })),
        (Err(e), true) => output::json_line(&serde_json::json!({
            "received": done.name, "from": from.to_string(), "ok": false, "error": e,
        })),
        (Ok(bytes), false) => println!(
            "{} {} ({bytes} bytes) from {}",
            output::green("stored"),
            done.name,
            from
        ),
        (Err(e), false) => println!("{} {} from {}: {e}", output::red("failed"), done.name, from),
    }
}

/// The receiver's decision on an upload, before any byte of it is read.
struct Policy {
    dir: PathBuf,
    max_size: Option<u64>,
    overwrite: bool,
    /// Names being received now: a second upload of the same name would share its partial file.
    busy: Arc<Mutex<HashSet<String>>>,
}

impl Policy {
    fn check(&self, md: &Metadata) -> Result<(), String> {
        let name = md.get_str("name").ok_or("no file name (metadata `name`)")?;
        if !is_plain_name(name) {
            return Err(format!("file name {name:?} is not a plain file name"));
        }
        let size: u64 = md
            .get_str("size")
            .and_then(|s| s.parse().ok())
            .ok_or("no file size (metadata `size`)")?;
        let sha = md.get_str("sha256").unwrap_or_default();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("no SHA-256 (metadata `sha256`, 64 hex digits)".to_owned());
        }
        if let Some(max) = self.max_size.filter(|max| size > *max) {
            return Err(format!(
                "`{name}` has {size} bytes, more than this receiver's limit of {max} bytes"
            ));
        }
        if !self.overwrite && self.dir.join(name).exists() {
            return Err(format!(
                "`{name}` already exists on the receiver (it runs without --overwrite)"
            ));
        }
        if !self
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned())
        {
            return Err(format!(
                "`{name}` is being received from another sender right now"
            ));
        }
        Ok(())
    }
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= 255
}

/// Receives one upload into `dir`; returns the file's size, or what went wrong (also sent to
/// the sender on the error half).
async fn store(stream: &XStream, dir: &Path, overwrite: bool) -> Result<u64, String> {
    let md = stream.metadata();
    // The decision checked these; read them again without trusting that.
    let name = md
        .get_str("name")
        .filter(|n| is_plain_name(n))
        .ok_or("bad name")?
        .to_owned();
    let size: u64 = md
        .get_str("size")
        .and_then(|s| s.parse().ok())
        .ok_or("bad size")?;
    let expected = md.get_str("sha256").unwrap_or_default().to_ascii_lowercase();
    let resume = md.get_str("resume") == Some("1");
    let part = dir.join(format!(".{name}.part"));
    match receive_into(stream, &part, size, resume).await {
        Ok((received, hash)) if received != size => {
            let msg = format!(
                "`{name}`: the data ended after {received} of {size} bytes; the partial file is kept for resuming"
            );
            let _ = hash;
            fail(stream, &msg).await;
            Err(msg)
        }
        Ok((_, hash)) if hash != expected => {
            let _ = tokio::fs::remove_file(&part).await;
            let msg = format!(
                "checksum mismatch for `{name}`: the sender announced {expected}, the receiver got {hash}"
            );
            fail(stream, &msg).await;
            Err(msg)
        }
        Ok((received, hash)) => {
            let target = dir.join(&name);
            if !overwrite && target.exists() {
                let msg = format!(
                    "`{name}` appeared on the receiver during the transfer; kept as {}",
                    part.display()
                );
                fail(stream, &msg).await;
                return Err(msg);
            }
            if let Err(e) = tokio::fs::rename(&part, &target).await {
                let msg = format!("cannot store `{name}`: {e}");
                fail(stream, &msg).await;
                return Err(msg);
            }
            let _ = stream.write_all(format!("ok sha256:{hash}").as_bytes()).await;
            let _ = stream.close().await;
            Ok(received)
        }
        Err(Cut::Local(msg)) => {
            fail(stream, &msg).await;
            Err(msg)
        }
        Err(Cut::Stream(e)) => Err(format!(
            "transfer of `{name}` cut short ({e}); the partial file is kept"
        )),
    }
}

/// Why a receive stopped early.
enum Cut {
    /// Our side failed (disk, too much data): reported to the sender.
    Local(String),
    /// The stream ended abnormally (reset, connection lost): nobody to tell.
    Stream(StreamError),
}

/// Writes the offset, then appends the data to `part`, hashing the partial file's bytes and
/// the new ones; returns the bytes now in `part` and their SHA-256.
async fn receive_into(stream: &XStream, part: &Path, size: u64, resume: bool) -> Result<(u64, String), Cut> {
    let local = |what: &str, e: std::io::Error| Cut::Local(format!("cannot {what} {}: {e}", part.display()));
    let mut hash = Sha256::new();
    let mut have = 0u64;
    if resume {
        if let Ok(mut f) = tokio::fs::File::open(part).await {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = f.read(&mut buf).await.map_err(|e| local("read", e))?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                have += n as u64;
            }
        }
    }
    let mut file = if resume && have > 0 && have <= size {
        tokio::fs::OpenOptions::new()
            .append(true)
            .open(part)
            .await
            .map_err(|e| local("open", e))?
    } else {
        hash = Sha256::new();
        have = 0;
        tokio::fs::File::create(part)
            .await
            .map_err(|e| local("create", e))?
    };
    stream.write_all(&have.to_be_bytes()).await.map_err(Cut::Stream)?;
    while let Some(chunk) = stream.read_chunk().await.map_err(Cut::Stream)? {
        have += chunk.len() as u64;
        if have > size {
            return Err(Cut::Local(format!("more data than the {size} bytes announced")));
        }
        hash.update(&chunk);
        // A full disk surfaces here; the sender sees the message on the error half.
        file.write_all(&chunk).await.map_err(|e| local("write", e))?;
    }
    file.sync_all().await.map_err(|e| local("write", e))?;
    Ok((have, hex::encode(hash.finalize())))
}

async fn fail(stream: &XStream, msg: &str) {
    tracing::warn!(stream = stream.name(), "{msg}");
    // Without data flush: the error overtakes anything still queued.
    let _ = stream.error_write(msg.as_bytes(), false).await;
}
