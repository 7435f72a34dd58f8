//! Helpers for the command-line tests: the real `echostream` binary, run against servers on
//! 127.0.0.1:0 started in the test process, each test with its own ECHOSTREAM_HOME.
#![allow(dead_code, unreachable_pub, missing_docs)]

use echostream::prelude::*;
use echostream::rpc::{handler_fn, listener_fn, ServerBuilder, ShutdownHandle};
use echostream::{Fingerprint, ServerIdentity};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Generous bound for anything a test waits on (loaded CI machines).
pub const WAIT: Duration = Duration::from_secs(30);

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_echostream");

/// A scratch directory for one test (its ECHOSTREAM_HOME and files), removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("es-cli-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A command for the binary with this scratch dir as ECHOSTREAM_HOME, no colour, no logs.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("ECHOSTREAM_HOME", &self.0)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("ECHOSTREAM_TOKEN")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the binary to completion (off the async runtime's threads).
    pub async fn run(&self, args: &[&str]) -> Out {
        self.run_with_stdin(args, None).await
    }

    pub async fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = self.cmd(args);
        let input = stdin.map(str::to_owned);
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let shown = args.join(" ");
        let out = tokio::task::spawn_blocking(move || {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("spawn echostream");
            if let Some(text) = input {
                use std::io::Write;
                let mut pipe = child.stdin.take().expect("stdin");
                pipe.write_all(text.as_bytes()).expect("write stdin");
            }
            child.wait_with_output().expect("wait for echostream")
        });
        let out = tokio::time::timeout(WAIT * 2, out)
            .await
            .unwrap_or_else(|_| panic!("`echostream {shown}` did not finish"))
            .expect("runner");
        Out::from(out, shown)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A finished run: exit code and output as text.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub args: String,
}

impl Out {
    pub fn from(o: Output, args: String) -> Self {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            args,
        }
    }

    /// Asserts the exit code, showing the whole run when it differs.
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "`echostream {}` exited {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.args, self.code, self.stdout, self.stderr
        );
        self
    }

    /// stdout as one JSON value.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout of `echostream {}` is not JSON ({e}):\n{}",
                self.args, self.stdout
            )
        })
    }

    /// stdout as JSON lines.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
            .collect()
    }
}

pub struct TestServer {
    pub addr: String,
    pub fingerprint: Fingerprint,
    pub pin: String,
    pub handle: echostream::ServerHandle,
    pub shutdown: ShutdownHandle,
    pub task: tokio::task::JoinHandle<Result<()>>,
}

impl TestServer {
    /// `--pin sha256:..` for this server.
    pub fn pin_args(&self) -> [&str; 2] {
        ["--pin", &self.pin]
    }

    pub async fn stop(self) {
        self.shutdown.shutdown();
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }
}

/// Starts the server `make` builds on `bind` with an ephemeral identity. A port just released
/// by a stopped server may stay taken for a moment while its endpoint drains: binding is
/// retried (bounded).
pub fn serve_on(make: impl Fn() -> ServerBuilder, bind: &str) -> TestServer {
    let deadline = std::time::Instant::now() + WAIT;
    let server = loop {
        match make().bind(bind).identity(ServerIdentity::Ephemeral).build() {
            Ok(server) => break server,
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("in use") => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("server on {bind} does not build: {e}"),
        }
    };
    let addr = server.local_addr().to_string();
    let fingerprint = server.fingerprint();
    TestServer {
        pin: format!("sha256:{fingerprint}"),
        addr,
        fingerprint,
        handle: server.handle(),
        shutdown: server.shutdown_handle(),
        task: tokio::spawn(server.run()),
    }
}

pub fn serve(builder: ServerBuilder) -> TestServer {
    let builder = std::sync::Mutex::new(Some(builder));
    serve_on(
        || builder.lock().unwrap().take().expect("one attempt on port 0"),
        "127.0.0.1:0",
    )
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Session {
    pub user: String,
    pub admin: bool,
}

/// The handlers the tests call: `math.add`, `user.login`, `meta.get`, `fail`, `slow`, `flaky`,
/// and a `note` listener feeding `notes`.
pub fn service(notes: tokio::sync::mpsc::UnboundedSender<serde_json::Value>) -> ServerBuilder {
    let calls = Arc::new(AtomicU64::new(0));
    RpcServer::builder()
        .handler(handler_fn(
            "math.add",
            |_c: Context, (a, b): (i64, i64)| async move { Ok::<_, Error>(a + b) },
        ))
        .handler(handler_fn("user.login", |_c: Context, user: String| async move {
            Ok::<_, Error>(Session {
                admin: user == "root",
                user,
            })
        }))
        .handler(handler_fn("meta.get", |c: Context, key: String| async move {
            Ok::<_, Error>(c.metadata().get_str(&key).map(str::to_owned))
        }))
        .handler(handler_fn("fail", |_c: Context, _: ()| async move {
            Err::<(), _>(Error::with_code(Code(1001), "this method always fails"))
        }))
        .handler(handler_fn("slow", |_c: Context, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Error>(ms)
        }))
        .handler(handler_fn("flaky", move |_c: Context, _: ()| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move {
                if n % 2 == 1 {
                    Err(Error::with_code(Code(1002), "odd call"))
                } else {
                    Ok::<_, Error>(n)
                }
            }
        }))
        .listener(listener_fn("note", move |_c: Context, v: serde_json::Value| {
            let _ = notes.send(v);
            async {}
        }))
}

/// Sends SIGINT (what Ctrl-C sends) to a running child.
pub fn interrupt(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -INT {}", child.id());
}

/// Waits for a child started with piped output (off the runtime's threads).
pub async fn finish(child: std::process::Child, what: &str) -> Out {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait for echostream"));
    let out = tokio::time::timeout(WAIT * 2, out)
        .await
        .unwrap_or_else(|_| panic!("`echostream {what}` did not finish"))
        .expect("runner");
    Out::from(out, what.to_owned())
}

/// Waits until the server has at least one connection (a child process connected).
pub async fn wait_for_connection(s: &TestServer, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.handle.connection_count() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "{what} never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
