//! `call`, `emit` and `listen`: one request, one event, and the events of one name, all in
//! JSON.

use super::{ctrl_c, json_argument};
use crate::args::{seconds, CallArgs, CallOptionArgs, EmitArgs, ListenArgs};
use crate::connect::{builder, connect, connect_with, metadata};
use crate::exit::{Class, Failure};
use crate::output;
use echostream::rpc::{Listener, Payload};
use echostream::{CallOptions, Codec, Context, RpcClient, Status};
use futures::future::BoxFuture;
use std::net::SocketAddr;
use tokio::sync::mpsc;

/// The per-call flags as [`CallOptions`] (always the JSON codec).
pub(crate) fn call_options(args: &CallOptionArgs) -> Result<CallOptions, Failure> {
    let timeout = seconds(args.timeout).ok_or_else(|| {
        Failure::new(
            Class::Usage,
            format!("--timeout {} is not a positive number of seconds", args.timeout),
        )
    })?;
    let mut opts = CallOptions::new().codec(Codec::Json).timeout(timeout);
    for (k, v) in metadata(&args.metadata)? {
        opts = opts.metadata(k, v);
    }
    if args.idempotent {
        opts = opts.idempotent();
    }
    Ok(opts)
}

pub(crate) async fn call(a: CallArgs, json: bool) -> Result<(), Failure> {
    // Bad input fails before any connection is made.
    let value = json_argument(a.argument.as_deref(), "argument")?;
    let opts = call_options(&a.opts)?;
    let client = connect(&a.target).await?;
    let result = client
        .request_with::<_, serde_json::Value>(&a.method, value, opts)
        .await;
    let outcome = match result {
        Ok(answer) => {
            if json {
                output::json_line(&answer);
            } else {
                output::json_pretty(&answer);
            }
            Ok(())
        }
        Err(e) => {
            let mut failure = Failure::from(e);
            if failure.class == Class::UnknownMethod {
                failure = super::reflect::with_suggestions(&client, &a.method, failure).await;
            }
            Err(failure)
        }
    };
    client.close().await;
    outcome
}

pub(crate) async fn emit(a: EmitArgs, json: bool) -> Result<(), Failure> {
    let value = json_argument(Some(&a.value), "event value")?;
    let mut opts = CallOptions::new().codec(Codec::Json);
    for (k, v) in metadata(&a.metadata)? {
        opts = opts.metadata(k, v);
    }
    let client = connect(&a.target).await?;
    let sent = client.peer().emit_with(&a.event, value, opts).await;
    // Closing waits (briefly) for the event to leave: it is on its way once this returns.
    client.close().await;
    sent?;
    if json {
        output::json_line(&serde_json::json!({ "event": a.event, "sent": true }));
    }
    Ok(())
}

/// Events of one name, handed to the printing loop (bounded: a slow terminal slows the
/// connection's listener, it does not queue without end).
struct Tap {
    event: String,
    tx: mpsc::Sender<(SocketAddr, Payload)>,
}

impl Listener for Tap {
    fn event(&self) -> &str {
        &self.event
    }

    fn call(&self, ctx: Context, payload: Payload) -> BoxFuture<'static, Result<(), Status>> {
        let tx = self.tx.clone();
        Box::pin(async move {
            let _ = tx.send((ctx.peer_addr(), payload)).await;
            Ok(())
        })
    }
}

pub(crate) async fn listen(a: ListenArgs, json: bool) -> Result<(), Failure> {
    let (tx, mut rx) = mpsc::channel(256);
    let (builder, trust) = builder(&a.target.connect)?;
    let builder = builder.listener(Tap {
        event: a.event.clone(),
        tx,
    });
    let client: RpcClient = connect_with(&a.target, builder, trust).await?;
    eprintln!(
        "{}",
        output::dim(&format!(
            "listening for `{}` from {} (Ctrl-C to stop)",
            a.event,
            client.remote_addr()
        ))
    );
    let peer = client.peer();
    let mut seen = 0u64;
    let mut warned_binary = false;
    let result = loop {
        if a.count.is_some_and(|n| seen >= n) {
            break Ok(());
        }
        tokio::select! {
            event = rx.recv() => {
                let Some((from, payload)) = event else { break Ok(()) };
                seen += 1;
                print_event(&a.event, from, &payload, json, &mut warned_binary);
            }
            closed = peer.closed() => break Err(Failure::from(closed)),
            _ = ctrl_c() => break Ok(()),
        }
    };
    client.close().await;
    result
}

fn print_event(event: &str, from: SocketAddr, payload: &Payload, json: bool, warned: &mut bool) {
    let value = match payload.codec {
        Codec::Json => serde_json::from_slice::<serde_json::Value>(&payload.bytes).ok(),
        _ => None,
    };
    if value.is_none() && !*warned {
        *warned = true;
        eprintln!(
            "note: `{event}` arrives encoded with {:?}, which only the sender's types can read; printing its \
             bytes as hex (senders can use the JSON codec, `CallOptions::codec(Codec::Json)`)",
            payload.codec
        );
    }
    let line = match (&value, json) {
        (Some(v), false) => v.clone(),
        (Some(v), true) => serde_json::json!({ "event": event, "from": from.to_string(), "value": v }),
        (None, _) => serde_json::json!({
            "event": event,
            "from": from.to_string(),
            "codec": format!("{:?}", payload.codec).to_lowercase(),
            "hex": hex::encode(&payload.bytes),
        }),
    };
    output::json_line(&line);
}
