//! What a reconnecting client keeps when its server goes away and comes back on the same port
//! with the same identity: a graceful restart in this process, and a server process killed with
//! SIGKILL (the `server` example as a child process) and started again.

mod common;

use common::*;
use echostream::prelude::*;
use echostream::rpc::{handler_fn, listener_fn, ReconnectPolicy};
use echostream::stream::{stream_handler_fn, StreamError, XStream};
use echostream::ServerIdentity;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "not reached in time: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `tick.send(n)` pushes `tick` and `note` events with `n` to the caller; `ask_client` calls
/// the client's own handler; stream `hold` reads until its stream ends.
fn restartable(identity: &ServerIdentity, addr: &str) -> RpcServer {
    try_restartable(identity, addr).unwrap()
}

fn try_restartable(identity: &ServerIdentity, addr: &str) -> Result<RpcServer> {
    RpcServer::builder()
        .bind(addr)
        .identity(identity.clone())
        .time_sync_interval(Duration::from_millis(100))
        .handler(handler_fn("tick.send", |ctx: Context, n: u64| async move {
            ctx.peer().emit("tick", n).await?;
            ctx.peer().emit("note", n).await
        }))
        .handler(handler_fn("ask_client", |ctx: Context, _: ()| async move {
            ctx.peer().request::<_, String>("client.name", ()).await
        }))
        .stream_handler(stream_handler_fn(
            "hold",
            |_ctx: Context, s: XStream| async move {
                s.read_to_end().await?;
                Ok::<_, StreamError>(())
            },
        ))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_subscriptions_listeners_and_handlers_resumes_clock_sync_and_fails_open_streams() {
    init_tracing();
    let identity = fixed_identity();
    let first = restartable(&identity, "127.0.0.1:0");
    let addr = first.local_addr().to_string();
    let stop = first.shutdown_handle();
    let task = tokio::spawn(first.run());
    let (notes_tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    let client = RpcClient::builder()
        .pin(first_fingerprint(&identity))
        .time_sync_interval(Duration::from_millis(100))
        .reconnect(ReconnectPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            wait_for_connection: true,
            ..Default::default()
        })
        .handler(handler_fn("client.name", |_c: Context, _: ()| async {
            Ok::<_, Error>("c1".to_string())
        }))
        .listener(listener_fn("note", move |_c: Context, n: u64| {
            let tx = notes_tx.clone();
            async move {
                let _ = tx.send(n);
            }
        }))
        .connect(&addr)
        .await
        .unwrap();
    let mut ticks = client.subscribe::<u64>("tick");
    client.request::<_, ()>("tick.send", 1u64).await.unwrap();
    assert_eq!(tokio::time::timeout(WAIT, ticks.recv()).await.unwrap(), Some(1));
    assert_eq!(tokio::time::timeout(WAIT, notes.recv()).await.unwrap(), Some(1));
    client.clock().synced(2, WAIT).await.unwrap();

    // A stream open across the restart, with a read pending on it.
    let stream = Arc::new(client.open_stream("hold").await.unwrap());
    stream.write_all(b"before the restart").await.unwrap();
    let pending_read = tokio::spawn({
        let stream = stream.clone();
        async move {
            let mut buf = [0u8; 16];
            stream.read(&mut buf).await
        }
    });

    stop.shutdown();
    task.await.unwrap().unwrap();
    // The pending read fails with connection-lost: never a clean end of data.
    let read = tokio::time::timeout(WAIT, pending_read).await.unwrap().unwrap();
    assert!(
        matches!(read, Err(StreamError::ConnectionLost { .. })),
        "{read:?}"
    );

    // `run()` returns once nothing holds the old connections (a stream handler was reading
    // one), so the port is free at once.
    let second = try_restartable(&identity, &addr).expect("the port is free once run() returned");
    tokio::spawn(second.run());
    wait_until("reconnected", || client.is_connected()).await;

    // The old stream cannot survive a new connection, and says so.
    let write = stream.write_all(b"after").await;
    assert!(
        matches!(write, Err(StreamError::ConnectionLost { .. })),
        "{write:?}"
    );
    // The subscription and the listener deliver again, the client's handler answers, the
    // clock of the new connection syncs, and a new stream works.
    client.request::<_, ()>("tick.send", 2u64).await.unwrap();
    assert_eq!(tokio::time::timeout(WAIT, ticks.recv()).await.unwrap(), Some(2));
    assert_eq!(tokio::time::timeout(WAIT, notes.recv()).await.unwrap(), Some(2));
    assert_eq!(client.request::<_, String>("ask_client", ()).await.unwrap(), "c1");
    client.clock().synced(2, WAIT).await.unwrap();
    assert!(
        client.clock().offset_nanos().is_some() && client.clock().now().is_some(),
        "the new connection's clock has no estimate"
    );
    let fresh = client.open_stream("hold").await.unwrap();
    fresh.write_all(b"after the restart").await.unwrap();
    fresh.write_eof().await.unwrap();
}

fn first_fingerprint(identity: &ServerIdentity) -> echostream::Fingerprint {
    identity.load().unwrap().fingerprint
}

/// `target/<profile>/examples/server`, built by `cargo test` with the other examples.
fn server_example() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let path = dir.join("examples").join("server");
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples (or run `cargo build --examples`)",
        path.display()
    );
    path
}

/// A child process killed (SIGKILL) and reaped when dropped, so that a failing assertion
/// never leaves a server running after the test.
struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    /// SIGKILL now, and wait for the process to end.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `server` example as a child process on `addr`, with its persistent identity under
/// `home`; returns it once it printed its fingerprint.
fn start_server_process(home: &std::path::Path, addr: &str) -> (KillOnDrop, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(server_example())
        .arg(addr)
        .env("ECHOSTREAM_HOME", home)
        .env("ECHOSTREAM_TICK_MS", "50")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the server example");
    let stdout = child.stdout.take().expect("stdout");
    let child = KillOnDrop(child);
    let mut lines = BufReader::new(stdout);
    let mut fingerprint = None;
    let mut line = String::new();
    while fingerprint.is_none() {
        line.clear();
        assert!(
            lines.read_line(&mut line).expect("read the server's output") > 0,
            "the server example exited before printing its fingerprint"
        );
        fingerprint = line.strip_prefix("certificate: ").map(|f| f.trim().to_owned());
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while lines.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    (child, fingerprint.unwrap_or_default())
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_call_mid_stream_and_mid_broadcast_fails_everything_pending_then_the_client_resumes_trusting_the_same_identity(
) {
    init_tracing();
    let home = std::env::temp_dir().join(format!("es-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let addr = format!("127.0.0.1:{}", free_udp_port());
    let (mut server, fingerprint) = start_server_process(&home, &addr);
    let identity_dir = home.join("identities").join("example-server");
    let read_identity = || {
        (
            std::fs::read(identity_dir.join("cert.pem")).unwrap(),
            std::fs::read(identity_dir.join("key.pem")).unwrap(),
        )
    };
    let identity_before = read_identity();

    // Trust on first use, in the same home's known-hosts file; a short idle timeout so a
    // vanished server is noticed quickly.
    let known_hosts = home.join("known_hosts");
    let idle = Duration::from_secs(2);
    let client = RpcClient::builder()
        .known_hosts(&known_hosts)
        .idle_timeout(idle)
        .keep_alive(Some(Duration::from_millis(300)))
        .reconnect(ReconnectPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            wait_for_connection: true,
            ..Default::default()
        })
        .connect(&addr)
        .await
        .unwrap();
    let recorded = echostream::tls::list_known_hosts(Some(&known_hosts)).unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(format!("sha256:{}", recorded[0].fingerprint), fingerprint);
    let mut ticks = client.subscribe::<u64>("tick");
    for _ in 0..3 {
        tokio::time::timeout(WAIT, ticks.recv()).await.unwrap().unwrap();
    }

    // Pending at the moment of the kill: a call, an upload whose answer has not come, and
    // the broadcast.
    let call = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .request_with::<_, u64>("slow", 60_000u64, CallOptions::new().timeout(WAIT * 2))
                .await
        }
    });
    let upload = client.open_stream("upload").await.unwrap();
    upload.write_all(&vec![7u8; 256 * 1024]).await.unwrap();
    let upload = tokio::spawn(async move {
        // Writes until something fails: still writing at the kill.
        let chunk = vec![7u8; 1 << 20];
        loop {
            upload.write_all(&chunk).await?;
            tokio::task::yield_now().await;
        }
        #[allow(unreachable_code)]
        Ok::<(), StreamError>(())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!call.is_finished() && !upload.is_finished());

    server.kill();
    let killed = Instant::now();

    // Every pending operation fails with connection-lost, within the idle timeout (bounded
    // generously for a loaded machine), and nothing is reported as delivered.
    let call = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    assert!(matches!(call, Err(Error::ConnectionClosed { .. })), "{call:?}");
    let upload = tokio::time::timeout(WAIT, upload).await.unwrap().unwrap();
    assert!(
        matches!(upload, Err(StreamError::ConnectionLost { .. })),
        "{upload:?}"
    );
    assert!(killed.elapsed() < idle + WAIT / 2, "{:?}", killed.elapsed());
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(10), ticks.recv()).await {}

    // The same server, restarted on the same port with the same persistent identity: the
    // client reconnects by itself and trusts it (not a changed identity).
    let (mut server, again) = start_server_process(&home, &addr);
    assert_eq!(again, fingerprint);
    let sum: i64 = client
        .request_with("math.add", (2i64, 3i64), CallOptions::new().timeout(WAIT))
        .await
        .unwrap();
    assert_eq!(sum, 5);
    // The subscription resumes with the new process's broadcast (its counter starts again).
    let first = tokio::time::timeout(WAIT, ticks.recv()).await.unwrap().unwrap();
    assert!(first < 1_000, "{first}");
    // A new upload is answered with exactly what was sent.
    let upload = client.open_stream("upload").await.unwrap();
    upload.write_all(&vec![1u8; 100_000]).await.unwrap();
    upload.write_eof().await.unwrap();
    let mut answer = [0u8; 8];
    upload.read_exact(&mut answer).await.unwrap();
    assert_eq!(u64::from_be_bytes(answer), 100_000);

    // The identity and the known-hosts file are intact: one entry, the same fingerprint.
    assert_eq!(read_identity(), identity_before);
    assert_eq!(
        echostream::tls::list_known_hosts(Some(&known_hosts)).unwrap(),
        recorded
    );
    server.kill();
    let _ = std::fs::remove_dir_all(&home);
}
