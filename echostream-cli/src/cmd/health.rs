//! `health`: a server's health from `echostream.health` (and `--watch`: the
//! `echostream.health.watch` stream), in the way of grpc-health-probe.

use super::ctrl_c;
use crate::args::HealthArgs;
use crate::connect::connect;
use crate::exit::{Class, Failure};
use crate::output;
use echostream::rpc::health::HealthStatus;
use echostream::{Caller, Error};

pub(crate) async fn run(a: HealthArgs, json: bool) -> Result<(), Failure> {
    let client = connect(&a.target).await?;
    let what = if a.service.is_empty() {
        "the server".to_owned()
    } else {
        format!("service `{}`", a.service)
    };
    let result = if a.watch {
        watch(&client, &a.service, &what, json).await
    } else {
        match client.health(&a.service).await {
            Ok(status) => {
                print(status, &a.service, json);
                verdict(status, &what)
            }
            Err(e) => Err(not_offered(e)),
        }
    };
    client.close().await;
    result
}

async fn watch(client: &echostream::RpcClient, service: &str, what: &str, json: bool) -> Result<(), Failure> {
    let statuses = client.watch_health(service).await.map_err(not_offered)?;
    let mut last = None;
    loop {
        tokio::select! {
            next = statuses.recv() => match next {
                Some(status) => {
                    print(status, service, json);
                    last = Some(status);
                }
                // The server ended the watch (shutting down, after NOT_SERVING) or the
                // connection ended.
                None => break,
            },
            _ = ctrl_c() => break,
        }
    }
    match last {
        Some(status) => verdict(status, what),
        None => Err(Failure::new(
            Class::Unreachable,
            format!("no health status from {what}"),
        )),
    }
}

fn not_offered(e: Error) -> Failure {
    let f = Failure::from(e);
    if f.class == Class::UnknownMethod {
        f.hint("the server runs without the health service (`.health_service(false)`) or predates it")
    } else {
        f
    }
}

fn print(status: HealthStatus, service: &str, json: bool) {
    if json {
        output::json_line(&serde_json::json!({ "service": service, "status": status }));
    } else {
        let text = status.name();
        let shown = if status == HealthStatus::Serving {
            output::green(text)
        } else {
            output::red(text)
        };
        println!("{shown}");
    }
}

fn verdict(status: HealthStatus, what: &str) -> Result<(), Failure> {
    match status {
        HealthStatus::Serving => Ok(()),
        other => Err(Failure::new(Class::NotServing, format!("{what} is {other}"))),
    }
}
