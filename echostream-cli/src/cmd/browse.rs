//! `browse`: the EchoStream services announced on the LAN (mDNS `_echostream._udp`).

use super::ctrl_c;
use crate::args::{seconds, BrowseArgs};
use crate::exit::{Class, Failure};
use crate::output;
use echostream::discovery::{BrowseEvent, Discovery, Instance, Interfaces};

pub(crate) async fn run(a: BrowseArgs, json: bool) -> Result<(), Failure> {
    let discovery = Discovery::shared(Interfaces::All).map_err(|e| {
        Failure::new(Class::Unreachable, format!("cannot start mDNS discovery: {e}"))
            .hint("mDNS needs UDP port 5353 and a multicast-capable interface")
    })?;
    let browser = match &a.name {
        Some(name) => discovery.browse(name),
        None => discovery.browse_all(),
    };
    let mut browser = browser.map_err(|e| Failure::new(Class::Usage, format!("cannot browse: {e}")))?;
    if a.watch {
        if !json {
            eprintln!(
                "{}",
                output::dim("watching for EchoStream services (Ctrl-C to stop)")
            );
        }
        loop {
            tokio::select! {
                event = browser.next() => match event {
                    Some(event) => print_event(&event, json),
                    None => return Err(Failure::other("the mDNS daemon stopped")),
                },
                _ = ctrl_c() => return Ok(()),
            }
        }
    }
    let window = seconds(a.timeout).ok_or_else(|| {
        Failure::new(
            Class::Usage,
            format!("--timeout {} is not a positive number of seconds", a.timeout),
        )
    })?;
    // Ctrl-C ends the window early: what was found so far is printed.
    tokio::select! {
        _ = tokio::time::timeout(window, async { while browser.next().await.is_some() {} }) => {}
        _ = ctrl_c() => {}
    }
    let mut instances = browser.instances();
    instances.sort_by(|x, y| x.name().cmp(y.name()).then(x.fullname().cmp(y.fullname())));
    if json {
        output::json_pretty(&serde_json::Value::Array(instances.iter().map(to_json).collect()));
    } else if instances.is_empty() {
        let what = a.name.as_deref().map_or("no EchoStream service".to_owned(), |n| {
            format!("no instance of `{n}`")
        });
        eprintln!("{what} announced within {:.1} s", window.as_secs_f64());
    } else {
        let rows: Vec<Vec<String>> = instances.iter().map(row).collect();
        output::table(
            &["NAME", "ADDRESSES", "PORT", "FINGERPRINT", "VERSION", "TXT"],
            &rows,
        );
    }
    Ok(())
}

fn print_event(event: &BrowseEvent, json: bool) {
    let (what, mark) = match event {
        BrowseEvent::Appeared(_) => ("appeared", output::green("+")),
        BrowseEvent::Updated(_) => ("updated", "~".to_owned()),
        BrowseEvent::Disappeared(_) => ("disappeared", output::red("-")),
        _ => ("changed", "?".to_owned()),
    };
    let inst = event.instance();
    if json {
        let mut v = to_json(inst);
        v["event"] = what.into();
        output::json_line(&v);
    } else {
        println!("{mark} {}", row(inst).join("  "));
    }
}

fn addresses(inst: &Instance) -> String {
    let addrs: Vec<String> = inst.addrs().iter().map(|a| a.ip().to_string()).collect();
    if addrs.is_empty() {
        "-".to_owned()
    } else {
        addrs.join(",")
    }
}

fn row(inst: &Instance) -> Vec<String> {
    let fp = inst.fingerprint().map_or("-".to_owned(), |hex| {
        let short: String = hex.chars().take(16).collect();
        format!("sha256:{short}…")
    });
    let txt: Vec<String> = inst.app_txt().map(|(k, v)| format!("{k}={v}")).collect();
    vec![
        inst.name().to_owned(),
        addresses(inst),
        inst.port().to_string(),
        fp,
        inst.protocol_version().map_or("-".to_owned(), |v| v.to_string()),
        if txt.is_empty() {
            "-".to_owned()
        } else {
            txt.join(" ")
        },
    ]
}

fn to_json(inst: &Instance) -> serde_json::Value {
    serde_json::json!({
        "name": inst.name(),
        "fullname": inst.fullname(),
        "host": inst.host(),
        "addresses": inst.addrs().iter().map(|a| a.ip().to_string()).collect::<Vec<_>>(),
        "port": inst.port(),
        "fingerprint": inst.fingerprint().map(|hex| format!("sha256:{hex}")),
        "protocol_version": inst.protocol_version(),
        "instance_id": inst.instance_id(),
        "txt": inst.txt_entries(),
    })
}
