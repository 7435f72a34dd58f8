//! LAN discovery: an "AudioService" device announces itself over mDNS, a
//! controller finds it by name and calls it, a browser watches devices come
//! and go.
//!
//! mDNS multicasts on every interface of the network namespace it runs in.
//! Run this example in a network namespace of its own (root needed):
//!
//! ```text
//! unshare --net sh -c 'ip link set lo up && cargo run --example discovery'            # the whole story in one process
//! cargo run --example discovery -- --own-netns                                         # the same: re-runs itself under unshare
//! unshare --net sh -c 'ip link set lo up && cargo run --example discovery -- browse'   # one role per process:
//!     device [NAME] | controller [NAME] | browse [NAME]                                # (all in one namespace)
//! ```
//!
//! It refuses to start mDNS in a namespace it cannot tell apart from the
//! machine's, unless given `--allow-shared-netns` (for a machine of your own,
//! where announcing on the real LAN is what you want).

use echostream::discovery::{BrowseEvent, Discovery, Interfaces};
use echostream::prelude::*;
use echostream::{DiscoverOptions, ServerIdentity};
use std::time::Duration;

/// `audio.play`: pretends to play a file.
#[echostream::handler("audio.play")]
async fn play(ctx: Context, file: String) -> Result<String> {
    println!("  [device] playing {file:?} for {}", ctx.peer_addr());
    Ok(format!("playing {file}"))
}

fn device(name: &str) -> Result<RpcServer> {
    RpcServer::builder()
        .bind("0.0.0.0:0")
        .identity(ServerIdentity::Ephemeral)
        .handler(play)
        .enable_discovery(name)
        .discovery_txt("room", "living room")
        .build()
}

async fn controller(name: &str) -> Result<()> {
    let t0 = std::time::Instant::now();
    let client = RpcClient::builder()
        .discover(DiscoverOptions::new(name).timeout(Duration::from_secs(10)))
        .await?;
    println!(
        "[controller] found `{name}` at {} in {:?} (pinned {})",
        client.remote_addr(),
        t0.elapsed(),
        client
            .server_fingerprint()
            .map(|f| f.to_string())
            .unwrap_or_default()
    );
    let reply: String = client.request("audio.play", "music.mp3").await?;
    println!("[controller] audio.play -> {reply:?}");
    client.close().await;
    Ok(())
}

async fn browse(name: &str, for_how_long: Option<Duration>) -> Result<()> {
    let discovery = Discovery::shared(Interfaces::All).map_err(|e| Error::Discovery(e.to_string()))?;
    let mut browser = discovery
        .browse(name)
        .map_err(|e| Error::Discovery(e.to_string()))?;
    println!("[browser] watching `{name}` on {}", discovery.interfaces());
    let watch = async {
        while let Some(event) = browser.next().await {
            match event {
                BrowseEvent::Appeared(i) => println!(
                    "[browser] + {} at {:?}, room {:?}",
                    i.name(),
                    i.addrs(),
                    i.txt("room").unwrap_or("?")
                ),
                BrowseEvent::Updated(i) => println!("[browser] ~ {} now at {:?}", i.name(), i.addrs()),
                BrowseEvent::Disappeared(i) => println!("[browser] - {} is gone", i.name()),
                _ => {}
            }
        }
    };
    match for_how_long {
        Some(d) => {
            let _ = tokio::time::timeout(d, watch).await;
        }
        None => {
            tokio::select! {
                _ = watch => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    }
    Ok(())
}

/// Browser, device and controller in one process, then the device leaves.
async fn story(name: &str) -> Result<()> {
    let watcher = tokio::spawn({
        let name = name.to_owned();
        async move { browse(&name, Some(Duration::from_secs(6))).await }
    });
    let server = device(name)?;
    println!(
        "[device] `{}` serving on {} (announcing; mDNS probing takes about 0.75 s)",
        server.discovery_instance().unwrap_or_default(),
        server.local_addr()
    );
    let stop = server.shutdown_handle();
    let serving = tokio::spawn(server.run());
    controller(name).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("[device] shutting down (goodbye)");
    stop.shutdown();
    let _ = serving.await;
    let _ = watcher.await;
    Ok(())
}

/// Re-runs this program under `unshare --net` with `lo` up.
fn reexec_in_own_netns(args: &[String]) -> ! {
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(&format!("cannot find this program: {e}")));
    let status = std::process::Command::new("unshare")
        .args(["--net", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(exe)
        .args(args.iter().filter(|a| *a != "--own-netns"))
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run unshare: {e}")));
    std::process::exit(status.code().unwrap_or(1));
}

fn fail(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(2);
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--own-netns") {
        reexec_in_own_netns(&args);
    }
    let allow_shared = args.iter().any(|a| a == "--allow-shared-netns");
    match echostream::discovery::netns::isolation() {
        Ok(why) => println!("({why}: mDNS stays in this namespace)"),
        Err(why) if allow_shared => println!("(warning: {why}; announcing on this machine's network)"),
        Err(why) => fail(&format!(
            "refusing to start mDNS: {why}.\n\
             Run it in a network namespace of its own:\n  \
             unshare --net sh -c 'ip link set lo up && cargo run --example discovery'\n\
             or `cargo run --example discovery -- --own-netns`, \
             or pass --allow-shared-netns on a machine where LAN multicast is fine."
        )),
    }
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let name = words.get(1).copied().unwrap_or("AudioService");
    match words.first().copied() {
        None | Some("story") => story(name).await,
        Some("device") => {
            let server = device(name)?;
            println!(
                "[device] `{}` on {}; Ctrl-C to say goodbye",
                server.discovery_instance().unwrap_or_default(),
                server.local_addr()
            );
            server
                .run_until(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
        }
        Some("controller") => controller(name).await,
        Some("browse") => browse(name, None).await,
        Some(other) => fail(&format!(
            "unknown mode `{other}`: use story, device, controller or browse"
        )),
    }
}
