//! `list` and `describe`: what a server offers, from its reflection (`echostream.describe`).

use crate::args::{DescribeArgs, TargetArgs};
use crate::connect::connect;
use crate::exit::{Class, Failure};
use crate::output;
use echostream::types::descriptor::DESCRIBE_METHOD;
use echostream::{Caller, Error, RpcClient, ServiceDescription};

/// The server's description, with a clear failure when it has reflection turned off.
async fn description(client: &RpcClient) -> Result<ServiceDescription, Failure> {
    client.describe().await.map_err(|e| match e {
        Error::UnknownMethod { .. } => Failure::new(
            Class::UnknownMethod,
            format!(
                "{} does not offer reflection (`{DESCRIBE_METHOD}` is turned off or refused)",
                client.remote_addr()
            ),
        )
        .hint("methods can still be called by name with `echostream call`"),
        other => Failure::from(other),
    })
}

pub(crate) async fn list(a: TargetArgs, json: bool) -> Result<(), Failure> {
    let client = connect(&a).await?;
    let result = description(&client).await;
    client.close().await;
    let d = result?;
    if json {
        output::json_pretty(&serde_json::to_value(&d).map_err(|e| Failure::other(e.to_string()))?);
        return Ok(());
    }
    let mut rows = Vec::new();
    for m in &d.methods {
        let types = format!(
            "{} -> {}",
            short_type(m.request.as_deref()),
            short_type(m.response.as_deref())
        );
        let flags = if m.idempotent { "idempotent" } else { "" };
        rows.push(row("method", &m.name, types, m.service.as_deref(), flags));
    }
    for e in &d.events {
        rows.push(row(
            "event",
            &e.name,
            short_type(e.payload.as_deref()),
            e.service.as_deref(),
            "",
        ));
    }
    for s in &d.streams {
        let types = if s.raw {
            "bytes".to_owned()
        } else {
            short_type(s.message.as_deref())
        };
        rows.push(row("stream", &s.name, types, s.service.as_deref(), ""));
    }
    output::table(&["KIND", "NAME", "TYPES", "SERVICE", ""], &rows);
    Ok(())
}

fn row(kind: &str, name: &str, types: String, service: Option<&str>, flags: &str) -> Vec<String> {
    vec![
        kind.to_owned(),
        name.to_owned(),
        types,
        service.unwrap_or("-").to_owned(),
        flags.to_owned(),
    ]
}

pub(crate) async fn describe(a: DescribeArgs, json: bool) -> Result<(), Failure> {
    let client = connect(&a.target).await?;
    let result = description(&client).await;
    client.close().await;
    let d = result?;
    let name = a.name.as_str();
    let found = if let Some(m) = d.method(name) {
        let mut v = serde_json::json!({
            "kind": "method",
            "name": m.name,
            "request": m.request,
            "response": m.response,
            "idempotent": m.idempotent,
            "service": m.service,
        });
        v["request_schema"] = schema(m.request_schema.as_deref());
        v["response_schema"] = schema(m.response_schema.as_deref());
        v
    } else if let Some(e) = d.event(name) {
        let mut v = serde_json::json!({
            "kind": "event", "name": e.name, "payload": e.payload, "service": e.service,
        });
        v["payload_schema"] = schema(e.payload_schema.as_deref());
        v
    } else if let Some(s) = d.stream(name) {
        let mut v = serde_json::json!({
            "kind": "stream", "name": s.name, "message": s.message, "raw": s.raw, "service": s.service,
        });
        v["message_schema"] = schema(s.message_schema.as_deref());
        v
    } else {
        let failure = Failure::new(
            Class::UnknownMethod,
            format!(
                "{} has no method, event or stream named `{name}`",
                client.remote_addr()
            ),
        );
        return Err(suggest(failure, name, &d));
    };
    if json {
        output::json_pretty(&found);
        return Ok(());
    }
    let text = |key: &str| found[key].as_str().unwrap_or("unknown").to_owned();
    println!("{} {}", output::bold(&text("kind")), output::bold(name));
    if let Some(service) = found["service"].as_str() {
        println!("  service:   {service}");
    }
    let fields: &[(&str, &str)] = match found["kind"].as_str() {
        Some("method") => &[("request", "request_schema"), ("response", "response_schema")],
        Some("event") => &[("payload", "payload_schema")],
        _ => &[("message", "message_schema")],
    };
    if found["raw"].as_bool() == Some(true) {
        println!("  message:   raw byte frames (XStream)");
    } else {
        for (ty, sch) in fields {
            println!("  {ty:<10} {}", text(ty));
            if !found[*sch].is_null() {
                let pretty = serde_json::to_string_pretty(&found[*sch]).unwrap_or_default();
                for line in pretty.lines() {
                    println!("    {}", output::dim(line));
                }
            }
        }
    }
    if found["idempotent"].as_bool() == Some(true) {
        println!("  idempotent: may run on 0-RTT early data");
    }
    if fields.iter().all(|(_, sch)| found[*sch].is_null()) && found["raw"].as_bool() != Some(true) {
        println!(
            "  {}",
            output::dim(
                "(no JSON Schema: the server is built without the `schema` feature or the type has none)"
            )
        );
    }
    Ok(())
}

/// A schema given as JSON text, as a JSON value (null when absent, the text when malformed).
fn schema(text: Option<&str>) -> serde_json::Value {
    match text {
        None => serde_json::Value::Null,
        Some(t) => serde_json::from_str(t).unwrap_or_else(|_| serde_json::Value::String(t.to_owned())),
    }
}

/// `alloc::string::String` → `String`, `(i64, i64)` stays, `alloc::vec::Vec<u8>` → `Vec<u8>`.
fn short_type(name: Option<&str>) -> String {
    let Some(name) = name else { return "?".to_owned() };
    let mut out = String::with_capacity(name.len());
    let mut segment = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            segment.clear();
        } else if c.is_alphanumeric() || c == '_' {
            segment.push(c);
        } else {
            out.push_str(&segment);
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(&segment);
    out
}

/// Adds "did you mean" from a description to an unknown-name failure.
fn suggest(mut failure: Failure, name: &str, d: &ServiceDescription) -> Failure {
    let names = d
        .methods
        .iter()
        .map(|m| m.name.as_str())
        .chain(d.events.iter().map(|e| e.name.as_str()))
        .chain(d.streams.iter().map(|s| s.name.as_str()));
    let close = close_names(name, names);
    failure.hint = Some(if close.is_empty() {
        "`echostream list TARGET` shows what the server offers".to_owned()
    } else {
        format!(
            "did you mean {}?",
            close
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    failure
}

/// Up to three names close to `wanted` (edit distance, or one containing the other), closest
/// first.
pub(crate) fn close_names<'a>(wanted: &str, names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut scored: Vec<(usize, &str)> = names
        .filter(|n| *n != wanted)
        .filter_map(|n| {
            let distance = strsim::levenshtein(&wanted.to_lowercase(), &n.to_lowercase());
            let limit = (wanted.chars().count() / 3).max(2);
            let related = n.contains(wanted) || (wanted.len() >= 3 && wanted.contains(n));
            (distance <= limit || related).then_some((distance, n))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, n)| n.to_owned()).collect()
}

/// After an unknown method: asks the server what it has and suggests close names.
pub(crate) async fn with_suggestions(client: &RpcClient, method: &str, failure: Failure) -> Failure {
    match client.describe().await {
        Ok(d) => {
            let names = d.methods.iter().map(|m| m.name.as_str());
            let close = close_names(method, names);
            if close.is_empty() {
                failure
            } else {
                let list = close
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                failure.hint(format!(
                    "did you mean {list}? (`echostream list TARGET` shows all methods)"
                ))
            }
        }
        Err(_) => failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_find_typos_and_prefixes() {
        let names = ["math.add", "math.sub", "user.login", "echo"];
        assert_eq!(close_names("math.ad", names.into_iter()), ["math.add"]);
        assert_eq!(close_names("user.logn", names.into_iter()), ["user.login"]);
        assert!(close_names("zzz.qqqqq", names.into_iter()).is_empty());
    }

    #[test]
    fn type_names_lose_their_paths() {
        assert_eq!(short_type(Some("alloc::string::String")), "String");
        assert_eq!(short_type(Some("(i64, alloc::vec::Vec<u8>)")), "(i64, Vec<u8>)");
        assert_eq!(short_type(None), "?");
    }
}
