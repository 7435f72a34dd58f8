//! From a TARGET and the trust flags to a connected [`RpcClient`]: `host:port` directly,
//! `mdns:NAME` and `dns-sd:SERVICE` through discovery (pinning the announced fingerprint unless
//! a trust flag says otherwise).

use crate::args::{seconds, ConnectArgs, TargetArgs};
use crate::exit::{Class, Failure};
use echostream::rpc::ClientBuilder;
use echostream::{ClientTrust, DiscoverOptions, Fingerprint, RpcClient, ServerIdentity};
use std::time::Duration;

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `host:port`.
    Address(String),
    /// `mdns:NAME`: an instance of service NAME found on the LAN.
    Mdns(String),
    /// `dns-sd:SERVICE`: an instance listed by unicast DNS-SD (system resolver).
    DnsSd(String),
}

impl Target {
    pub(crate) fn parse(text: &str) -> Result<Self, Failure> {
        if let Some(name) = text.strip_prefix("mdns:") {
            if name.is_empty() {
                return Err(usage(
                    "`mdns:` needs a service name, for example mdns:AudioService",
                ));
            }
            return Ok(Target::Mdns(name.to_owned()));
        }
        if let Some(service) = text.strip_prefix("dns-sd:") {
            if service.is_empty() {
                return Err(usage(
                    "`dns-sd:` needs a DNS-SD service name, for example dns-sd:_echostream._udp.example.internal",
                ));
            }
            return Ok(Target::DnsSd(service.to_owned()));
        }
        // `host:port` or `[v6]:port`: the port is what the library cannot guess.
        let port = text.rsplit_once(':').map(|(_, p)| p);
        match port.map(str::parse::<u16>) {
            Some(Ok(_)) => Ok(Target::Address(text.to_owned())),
            _ => Err(usage(format!(
                "target `{text}` is neither `host:port`, `mdns:NAME` nor `dns-sd:SERVICE` (for example 127.0.0.1:5000)"
            ))),
        }
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::new(Class::Usage, message)
}

/// The trust the flags ask for; `None` means the default (trust on first use for addresses,
/// the announced fingerprint for `mdns:`).
fn trust(args: &ConnectArgs) -> Result<Option<ClientTrust>, Failure> {
    if args.insecure {
        eprintln!(
            "WARNING: --insecure accepts any certificate: anyone on the network path can read and change \
             this traffic. Use --pin sha256:... instead (the server's fingerprint is in `echostream identity show` \
             on its machine)."
        );
        return Ok(Some(ClientTrust::dangerous_accept_any_certificate()));
    }
    if !args.pins.is_empty() {
        let mut pins = Vec::new();
        for pin in &args.pins {
            let fp: Fingerprint = pin.parse().map_err(|e| {
                usage(format!(
                    "--pin `{pin}` is not a fingerprint: {e} (expected sha256:HEX)"
                ))
            })?;
            pins.push(fp);
        }
        return Ok(Some(ClientTrust::Pinned(pins)));
    }
    if let Some(ca) = &args.ca {
        return Ok(Some(ClientTrust::CaFile(ca.clone())));
    }
    if let Some(file) = &args.known_hosts {
        return Ok(Some(ClientTrust::known_hosts_file(file.clone())));
    }
    Ok(None)
}

/// A client builder with the flags' trust, credentials and timeouts.
pub(crate) fn builder(args: &ConnectArgs) -> Result<(ClientBuilder, Option<ClientTrust>), Failure> {
    let timeout = seconds(args.connect_timeout).ok_or_else(|| {
        usage(format!(
            "--connect-timeout {} is not a positive number of seconds",
            args.connect_timeout
        ))
    })?;
    // Resumption needs nothing from the user, but a one-shot tool gains nothing from it either.
    let mut builder = RpcClient::builder().connect_timeout(timeout).resumption(false);
    let trust = trust(args)?;
    if let Some(trust) = &trust {
        builder = builder.trust(trust.clone());
    }
    if let Some(name) = &args.server_name {
        builder = builder.server_name(name.clone());
    }
    if let Some(token) = &args.token {
        builder = builder.token(token.clone());
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        builder = builder.client_identity(ServerIdentity::PemFiles {
            cert_chain: cert.clone(),
            private_key: key.clone(),
        });
    }
    Ok((builder, trust))
}

/// Connects to the target with `builder` (made by [`builder`], then given handlers or
/// listeners by the command).
pub(crate) async fn connect_with(
    target: &TargetArgs,
    builder: ClientBuilder,
    trust: Option<ClientTrust>,
) -> Result<RpcClient, Failure> {
    let timeout = seconds(target.connect.connect_timeout).unwrap_or(Duration::from_secs(10));
    let client = match Target::parse(&target.target)? {
        Target::Address(addr) => builder.connect(&addr).await?,
        Target::Mdns(name) => {
            let mut opts = DiscoverOptions::new(name).timeout(timeout);
            if let Some(trust) = trust {
                opts = opts.trust(trust);
            }
            builder.discover(opts).await?
        }
        Target::DnsSd(service) => {
            let mut opts = DiscoverOptions::new(format!("dns-sd:{service}")).timeout(timeout);
            if let Some(trust) = trust {
                opts = opts.trust(trust);
            }
            builder.discover(opts).await?
        }
    };
    tracing::info!(server = %client.remote_addr(), fingerprint = ?client.server_fingerprint(), "connected");
    Ok(client)
}

/// Connects with the flags and nothing else.
pub(crate) async fn connect(target: &TargetArgs) -> Result<RpcClient, Failure> {
    let (builder, trust) = builder(&target.connect)?;
    connect_with(target, builder, trust).await
}

/// `KEY=VALUE` pairs from the command line.
pub(crate) fn metadata(pairs: &[String]) -> Result<Vec<(String, String)>, Failure> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(usage(format!("metadata `{pair}` is not KEY=VALUE"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_addresses_and_mdns_names() {
        assert_eq!(
            Target::parse("127.0.0.1:5000").unwrap(),
            Target::Address("127.0.0.1:5000".into())
        );
        assert_eq!(
            Target::parse("[::1]:5000").unwrap(),
            Target::Address("[::1]:5000".into())
        );
        assert_eq!(
            Target::parse("localhost:1").unwrap(),
            Target::Address("localhost:1".into())
        );
        assert_eq!(Target::parse("mdns:Audio").unwrap(), Target::Mdns("Audio".into()));
        assert_eq!(
            Target::parse("dns-sd:_echostream._udp.example.internal").unwrap(),
            Target::DnsSd("_echostream._udp.example.internal".into())
        );
        for bad in ["127.0.0.1", "mdns:", "dns-sd:", "host:port", "host:70000"] {
            assert_eq!(Target::parse(bad).unwrap_err().class, Class::Usage, "{bad}");
        }
    }
}
