//! `identity` (persistent server identities) and `known-hosts` (the client's trust store).

use crate::args::{IdentityCommand, KnownHostsCommand};
use crate::exit::{Class, Failure};
use crate::output;
use echostream::tls::{echostream_home, forget_known_host, list_known_hosts, IdentityFiles};

fn tls_failure(e: echostream::tls::TlsError) -> Failure {
    Failure::other(e.to_string())
}

pub(crate) fn identity(c: IdentityCommand, json: bool) -> Result<(), Failure> {
    let home = echostream_home();
    match c {
        IdentityCommand::List => {
            let names = IdentityFiles::list(&home).map_err(tls_failure)?;
            let mut rows = Vec::new();
            let mut items = Vec::new();
            for name in names {
                let files = IdentityFiles::of(&name, &home).map_err(tls_failure)?;
                let fp = files.read().map(|i| format!("sha256:{}", i.fingerprint));
                let fp_text = fp
                    .as_ref()
                    .map_or_else(|e| format!("unreadable: {e}"), Clone::clone);
                items.push(serde_json::json!({
                    "name": name, "dir": files.dir, "fingerprint": fp.ok(),
                }));
                rows.push(vec![name, fp_text]);
            }
            if json {
                output::json_pretty(&serde_json::Value::Array(items));
            } else if rows.is_empty() {
                eprintln!("no identities under {}", home.join("identities").display());
            } else {
                output::table(&["NAME", "FINGERPRINT"], &rows);
            }
            Ok(())
        }
        IdentityCommand::Show(n) => {
            let files = IdentityFiles::of(&n.name, &home).map_err(tls_failure)?;
            if !files.exist().map_err(tls_failure)? {
                return Err(Failure::other(format!(
                    "no identity named `{}` under {}",
                    n.name,
                    files.dir.display()
                ))
                .hint(format!(
                    "`echostream identity new --name {}` creates one (a server also creates it on first start)",
                    n.name
                )));
            }
            let id = files.read().map_err(tls_failure)?;
            print_identity(&files, &id.fingerprint.to_string(), json);
            Ok(())
        }
        IdentityCommand::New { name, force } => {
            let files = IdentityFiles::of(&name.name, &home).map_err(tls_failure)?;
            if files.exist().map_err(tls_failure)? && !force {
                let old = files
                    .read()
                    .map(|i| format!(" (sha256:{})", i.fingerprint))
                    .unwrap_or_default();
                return Err(Failure::other(format!(
                    "identity `{}` already exists{old} in {}",
                    name.name,
                    files.dir.display()
                ))
                .hint(
                    "--force replaces it: every client that recorded the old fingerprint will refuse the server \
                     until it runs `echostream known-hosts forget HOST:PORT`",
                ));
            }
            let id = files.regenerate().map_err(tls_failure)?;
            print_identity(&files, &id.fingerprint.to_string(), json);
            Ok(())
        }
        IdentityCommand::Export { name, with_key } => {
            let files = IdentityFiles::of(&name.name, &home).map_err(tls_failure)?;
            if !files.exist().map_err(tls_failure)? {
                return Err(Failure::other(format!(
                    "no identity named `{}` under {}",
                    name.name,
                    files.dir.display()
                )));
            }
            let read = |path: &std::path::Path| {
                std::fs::read_to_string(path)
                    .map_err(|e| Failure::other(format!("cannot read {}: {e}", path.display())))
            };
            let cert = read(&files.cert)?;
            if json {
                let mut v = serde_json::json!({ "name": name.name, "certificate_pem": cert });
                if with_key {
                    v["private_key_pem"] = read(&files.key)?.into();
                }
                output::json_pretty(&v);
            } else {
                print!("{cert}");
                if with_key {
                    eprintln!("warning: the private key follows; whoever has it can impersonate this server");
                    print!("{}", read(&files.key)?);
                }
            }
            Ok(())
        }
    }
}

fn print_identity(files: &IdentityFiles, fingerprint: &str, json: bool) {
    if json {
        output::json_pretty(&serde_json::json!({
            "name": files.name,
            "fingerprint": format!("sha256:{fingerprint}"),
            "dir": files.dir,
            "certificate": files.cert,
            "private_key": files.key,
        }));
    } else {
        println!("{}  {}", output::bold("identity"), files.name);
        println!("fingerprint  sha256:{fingerprint}");
        println!("certificate  {}", files.cert.display());
        println!("private key  {}", files.key.display());
        println!(
            "{}",
            output::dim(&format!("clients pin it with: --pin sha256:{fingerprint}"))
        );
    }
}

pub(crate) fn known_hosts(c: KnownHostsCommand, json: bool) -> Result<(), Failure> {
    match c {
        KnownHostsCommand::List(f) => {
            let entries = list_known_hosts(f.file.as_deref()).map_err(tls_failure)?;
            if json {
                let items: Vec<_> = entries
                    .iter()
                    .map(|e| serde_json::json!({ "host": e.host, "fingerprint": format!("sha256:{}", e.fingerprint), "line": e.line }))
                    .collect();
                output::json_pretty(&serde_json::Value::Array(items));
            } else if entries.is_empty() {
                eprintln!("no known hosts yet");
            } else {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.host.clone(),
                            format!("sha256:{}", e.fingerprint),
                            e.line.to_string(),
                        ]
                    })
                    .collect();
                output::table(&["HOST", "FINGERPRINT", "LINE"], &rows);
            }
            Ok(())
        }
        KnownHostsCommand::Forget { host, file } => {
            let removed = forget_known_host(file.file.as_deref(), &host).map_err(tls_failure)?;
            if removed.is_empty() {
                return Err(
                    Failure::new(Class::Other, format!("no known host matches `{host}`"))
                        .hint("`echostream known-hosts list` shows the recorded hosts"),
                );
            }
            if json {
                let items: Vec<_> = removed.iter().map(|e| serde_json::json!({ "host": e.host, "fingerprint": format!("sha256:{}", e.fingerprint) })).collect();
                output::json_pretty(&serde_json::json!({ "forgotten": items }));
            } else {
                for e in &removed {
                    println!("forgot {} (sha256:{})", e.host, e.fingerprint);
                }
            }
            Ok(())
        }
    }
}
