//! LAN discovery for servers and clients, over `echostream-discovery` (mDNS,
//! DNS-SD). Compiled with the `discovery` feature; without it only inert
//! placeholders remain, so the server carries no mDNS code.
//!
//! - Server: [`ServerBuilder::enable_discovery`] announces
//!   `NAME._echostream._udp.local.` when the server is built, with the bound
//!   port, the certificate fingerprint and the protocol version in TXT, and
//!   says goodbye when it shuts down (or is dropped).
//! - Client: [`RpcClient::discover`] finds an instance by name and connects,
//!   pinning the fingerprint its TXT record announces. The name selects the
//!   source ([`echostream_discovery::Source`]): `"dns-sd:SERVICE"` is unicast
//!   DNS-SD from a DNS server (feature `dns-sd`), anything else mDNS; a static
//!   list or a configured DNS-SD source is set with [`DiscoverOptions::source`].
//!   Every source yields the same instance records, and TXT fingerprints are
//!   pinned the same way whatever their source.
//!
//! **Policy with several instances**: connection attempts start as instances
//! resolve (in arrival order, each trying its addresses in
//! [`echostream_discovery::Instance::addrs`] order: IPv4 first); the first
//! attempt to complete wins. An instance known only by IPv6 addresses so far
//! waits 250 ms before its attempt starts, so that its IPv4 address, which
//! usually resolves a few milliseconds after the AAAA record, goes first. An instance whose connection fails is skipped, and the
//! search goes on until the timeout. An instance that resolves again with new
//! addresses or a new fingerprint is tried again with those.
//!
//! [`ServerBuilder::enable_discovery`]: crate::rpc::ServerBuilder::enable_discovery
//! [`RpcClient::discover`]: crate::rpc::RpcClient::discover

#[cfg(feature = "discovery")]
pub use echostream_discovery::Interfaces;
#[cfg(feature = "discovery")]
pub(crate) use enabled::{discovery_error, timeout_error, trust_for, ServerAnnouncement, ServerDiscovery};
#[cfg(feature = "discovery")]
pub use enabled::{DiscoverOptions, DEFAULT_DISCOVER_TIMEOUT};

#[cfg(not(feature = "discovery"))]
pub(crate) use disabled::{ServerAnnouncement, ServerDiscovery};

#[cfg(not(feature = "discovery"))]
mod disabled {
    use crate::connection::tls::Fingerprint;
    use std::net::SocketAddr;

    /// Without the `discovery` feature a server has nothing to announce.
    #[derive(Clone, Debug, Default)]
    pub(crate) struct ServerDiscovery;

    impl ServerDiscovery {
        pub(crate) fn start(self, _addr: SocketAddr, _fp: Fingerprint) -> crate::Result<ServerAnnouncement> {
            Ok(ServerAnnouncement)
        }
    }

    #[derive(Debug, Default)]
    pub(crate) struct ServerAnnouncement;

    impl ServerAnnouncement {
        pub(crate) fn goodbye(&self) {}
    }
}

#[cfg(feature = "discovery")]
mod enabled {
    use crate::connection::tls::{ClientTrust, Fingerprint};
    use crate::rpc::{ClientBuilder, RpcClient, RpcServer, ServerBuilder};
    use crate::{Error, Result};
    use echostream_discovery::{
        Addresses, Announcement, Announcer, BrowseEvent, Discovery, DiscoveryError, Instance, Interfaces,
        Source,
    };
    use futures::stream::{FuturesUnordered, StreamExt};
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Default time [`RpcClient::discover`] waits for a usable instance.
    pub const DEFAULT_DISCOVER_TIMEOUT: Duration = Duration::from_secs(5);

    /// How long an attempt on an instance known only by IPv6 addresses waits
    /// before it starts. mdns-sd resolves A and AAAA records as they arrive,
    /// often AAAA first; the wait lets the IPv4 address (usually a few
    /// milliseconds behind) go first, like RFC 8305's resolution delay.
    const IPV6_ONLY_DELAY: Duration = Duration::from_millis(250);

    pub(crate) fn discovery_error(e: DiscoveryError) -> Error {
        Error::Discovery(e.to_string())
    }

    /// What a server builder announces (set by `enable_discovery` and friends).
    #[derive(Clone, Debug, Default)]
    pub(crate) struct ServerDiscovery {
        name: Option<String>,
        txt: Vec<(String, String)>,
        interfaces: Interfaces,
    }

    impl ServerDiscovery {
        /// Announces the server if discovery was enabled. Returns at once:
        /// probing and announcing run on the discovery daemon's thread.
        pub(crate) fn start(self, addr: SocketAddr, fp: Fingerprint) -> Result<ServerAnnouncement> {
            let Some(name) = self.name else {
                return Ok(ServerAnnouncement::default());
            };
            let mut a = Announcement::new(name, addr.port())
                .protocol_version(echostream_types::PROTOCOL_VERSION)
                .fingerprint(fp.to_string())
                .addresses(Addresses::for_bound(addr));
            for (k, v) in self.txt {
                a = a.txt(k, v);
            }
            a.validate().map_err(discovery_error)?;
            let discovery = Discovery::shared(self.interfaces).map_err(discovery_error)?;
            let announcer = discovery.announce(a).map_err(discovery_error)?;
            tracing::info!(
                instance = announcer.instance_name(),
                interfaces = %discovery.interfaces(),
                %addr,
                "announcing over mDNS"
            );
            Ok(ServerAnnouncement {
                announcer: Mutex::new(Some(announcer)),
            })
        }
    }

    /// A server's live announcement; goodbye on shutdown or drop.
    #[derive(Debug, Default)]
    pub(crate) struct ServerAnnouncement {
        announcer: Mutex<Option<Announcer>>,
    }

    impl ServerAnnouncement {
        pub(crate) fn goodbye(&self) {
            if let Some(a) = lock(&self.announcer).take() {
                tracing::debug!(instance = a.instance_name(), "mDNS goodbye");
                a.shutdown();
            }
        }

        fn instance_name(&self) -> Option<String> {
            lock(&self.announcer)
                .as_ref()
                .map(|a| a.instance_name().to_owned())
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    impl ServerBuilder {
        /// Announces this server on the LAN over mDNS as `name` (spaces and
        /// UTF-8 allowed): instance `name._echostream._udp.local.` with the
        /// bound port, the certificate fingerprint and the protocol version in
        /// TXT. The announcement starts when the server is built (without
        /// waiting: mDNS probing takes about 0.75 s in the background) and
        /// ends with a goodbye when it shuts down or is dropped. If this
        /// process already announces `name`, this instance becomes `name (2)`.
        pub fn enable_discovery(mut self, name: impl Into<String>) -> Self {
            self.discovery.name = Some(name.into());
            self
        }

        /// Adds an application TXT entry to the announcement (printable ASCII
        /// key without `=`, not `proto`, `fp` or `id`; key and value within 254
        /// bytes). Checked by `build`.
        pub fn discovery_txt(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
            self.discovery.txt.push((key.into(), value.into()));
            self
        }

        /// The interfaces to announce on (default: all).
        pub fn discovery_interfaces(mut self, interfaces: Interfaces) -> Self {
            self.discovery.interfaces = interfaces;
            self
        }
    }

    impl RpcServer {
        /// The mDNS instance name this server announces (`None` without
        /// `enable_discovery`, or after the goodbye).
        pub fn discovery_instance(&self) -> Option<String> {
            self.discovery.instance_name()
        }
    }

    /// What [`ClientBuilder::discover`] looks for, where, for how long, and
    /// how it trusts what it finds. `&str`, `String` and
    /// [`Source`](echostream_discovery::Source) convert into it.
    ///
    /// The name selects the source: `"dns-sd:_echostream._udp.example.internal"`
    /// is unicast DNS-SD of that service (system resolver, or
    /// [`DiscoverOptions::dns_server`]; feature `dns-sd`), anything else an
    /// mDNS instance name. [`DiscoverOptions::source`] sets any source (a
    /// static list, DNS-SD with its own bounds) explicitly.
    #[derive(Clone, Debug)]
    pub struct DiscoverOptions {
        name: String,
        timeout: Duration,
        interfaces: Interfaces,
        trust: Option<ClientTrust>,
        /// Boxed: a `DiscoverOptions` travels by value in enums of the fronts (CLI, Python).
        source: Option<Box<Source>>,
        dns_server: Option<SocketAddr>,
    }

    impl DiscoverOptions {
        /// Looks for instances of `name` on all interfaces for up to 5 s,
        /// pinning the fingerprint each instance announces.
        pub fn new(name: impl Into<String>) -> Self {
            DiscoverOptions {
                name: name.into(),
                timeout: DEFAULT_DISCOVER_TIMEOUT,
                interfaces: Interfaces::All,
                trust: None,
                source: None,
                dns_server: None,
            }
        }

        /// Takes instances from `source` instead of the one the name selects.
        pub fn source(mut self, source: Source) -> Self {
            self.name = source.name().to_owned();
            self.source = Some(Box::new(source));
            self
        }

        /// For a `dns-sd:` name: asks this DNS server instead of the system resolver.
        pub fn dns_server(mut self, addr: SocketAddr) -> Self {
            self.dns_server = Some(addr);
            self
        }

        /// The source these options select (see the type's documentation).
        pub fn to_source(&self) -> Result<Source> {
            let source = match &self.source {
                Some(s) => (**s).clone(),
                None => Source::parse(&self.name, self.interfaces.clone()).map_err(discovery_error)?,
            };
            Ok(match (source, self.dns_server) {
                #[cfg(feature = "dns-sd")]
                (Source::DnsSd(d), Some(addr)) => Source::DnsSd(d.server(addr)),
                (s, _) => s,
            })
        }

        /// How long to wait for a usable instance (default 5 s); for
        /// `discover_all`, how long to collect instances.
        pub fn timeout(mut self, d: Duration) -> Self {
            self.timeout = d;
            self
        }

        /// Where to browse (default all interfaces).
        pub fn interfaces(mut self, interfaces: Interfaces) -> Self {
            self.interfaces = interfaces;
            self
        }

        /// Verifies servers with `trust` (CA roots, pinned fingerprints, known
        /// hosts) instead of the fingerprint their TXT record announces. Use
        /// this where an active attacker on the LAN is a concern: anyone can
        /// announce a name with their own fingerprint. With
        /// [`ClientTrust::Pinned`], instances announcing another fingerprint
        /// are skipped without a connection attempt.
        pub fn trust(mut self, trust: ClientTrust) -> Self {
            self.trust = Some(trust);
            self
        }

        /// The service name looked for.
        pub fn name(&self) -> &str {
            &self.name
        }

        /// How long discovery waits (for a balancer: for its first instance).
        pub(crate) fn discover_timeout(&self) -> Duration {
            self.timeout
        }
    }

    impl From<&str> for DiscoverOptions {
        fn from(name: &str) -> Self {
            DiscoverOptions::new(name)
        }
    }

    impl From<String> for DiscoverOptions {
        fn from(name: String) -> Self {
            DiscoverOptions::new(name)
        }
    }

    impl From<Source> for DiscoverOptions {
        fn from(source: Source) -> Self {
            DiscoverOptions::new(String::new()).source(source)
        }
    }

    /// Where a source looked, for messages: the interfaces for mDNS, as before; the source otherwise.
    fn where_looked(source: &Source) -> String {
        match source {
            Source::Mdns { interfaces, .. } => interfaces.to_string(),
            other => other.to_string(),
        }
    }

    impl From<&String> for DiscoverOptions {
        fn from(name: &String) -> Self {
            DiscoverOptions::new(name.as_str())
        }
    }

    impl RpcClient {
        /// Finds an instance of service `name` on the LAN over mDNS and
        /// connects to it, pinning the certificate fingerprint it announces;
        /// default client options. Returns as soon as one instance answers;
        /// fails with [`Error::DiscoveryTimeout`] after 5 s. See
        /// [`ClientBuilder::discover`] for options and the policy.
        ///
        /// ```no_run
        /// # async fn doc() -> echostream_core::Result<()> {
        /// use echostream_core::rpc::RpcClient;
        /// let client = RpcClient::discover("AudioService").await?;
        /// let () = client.request("audio.play", "music.mp3").await?;
        /// # Ok(()) }
        /// ```
        pub async fn discover(opts: impl Into<DiscoverOptions>) -> Result<RpcClient> {
            ClientBuilder::default().discover(opts).await
        }

        /// Connects to every instance of a service found within the timeout;
        /// see [`ClientBuilder::discover_all`].
        pub async fn discover_all(opts: impl Into<DiscoverOptions>) -> Result<Vec<RpcClient>> {
            ClientBuilder::default().discover_all(opts).await
        }
    }

    /// Why an instance cannot be tried, or the trust to try it with.
    pub(crate) fn trust_for(
        inst: &Instance,
        opts: &DiscoverOptions,
    ) -> std::result::Result<ClientTrust, String> {
        if let Some(v) = inst.protocol_version() {
            if v != echostream_types::PROTOCOL_VERSION {
                return Err(format!(
                    "announces protocol version {v}, this client speaks {}",
                    echostream_types::PROTOCOL_VERSION
                ));
            }
        }
        let announced: Option<Fingerprint> = inst.fingerprint().and_then(|hex| hex.parse().ok());
        match (&opts.trust, announced) {
            (Some(ClientTrust::Pinned(pins)), Some(fp)) if !pins.contains(&fp) => Err(format!(
                "announces fingerprint {fp}, which is not among the pinned ones"
            )),
            (Some(trust), _) => Ok(trust.clone()),
            (None, Some(fp)) => Ok(ClientTrust::Pinned(vec![fp])),
            (None, None) => Err("announces no certificate fingerprint (TXT `fp`) to pin; \
                 DiscoverOptions::trust can verify it another way"
                .into()),
        }
    }

    /// `NAME at ADDRS` for messages.
    fn describe(inst: &Instance) -> String {
        let addrs: Vec<String> = inst.addrs().iter().map(ToString::to_string).collect();
        format!("`{}` at [{}]", inst.name(), addrs.join(", "))
    }

    /// Tries `addrs` in order; the first connection wins.
    async fn connect_instance(
        builder: ClientBuilder,
        trust: ClientTrust,
        label: String,
        addrs: Vec<SocketAddr>,
    ) -> std::result::Result<RpcClient, String> {
        let mut errors = Vec::new();
        for addr in addrs {
            match builder
                .clone()
                .trust(trust.clone())
                .connect(&addr.to_string())
                .await
            {
                Ok(c) => {
                    tracing::debug!(instance = %label, %addr, "connected to a discovered instance");
                    return Ok(c);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(format!("{label}: {}", errors.join("; ")))
    }

    pub(crate) fn timeout_error(
        opts: &DiscoverOptions,
        source: &Source,
        other_names: Vec<String>,
        failures: Vec<String>,
    ) -> Error {
        Error::DiscoveryTimeout {
            name: opts.name.clone(),
            interfaces: where_looked(source),
            waited: opts.timeout,
            other_names,
            failures,
        }
    }

    impl ClientBuilder {
        /// Finds an instance of a service over mDNS and connects to it with
        /// this builder's options (handlers, timeouts, ...), verifying it with
        /// the fingerprint its TXT record announces unless
        /// [`DiscoverOptions::trust`] says otherwise.
        ///
        /// Policy: attempts start as instances resolve and the first to
        /// connect wins; an instance whose connection fails is skipped (and
        /// listed in the error if nothing else works); the search ends at the
        /// timeout with [`Error::DiscoveryTimeout`], which names the service,
        /// the interfaces, the time waited, the other services seen and the
        /// failures.
        ///
        /// ```no_run
        /// # async fn doc() -> echostream_core::Result<()> {
        /// use echostream_core::rpc::{DiscoverOptions, RpcClient};
        /// use std::time::Duration;
        /// let client = RpcClient::builder()
        ///     .timeout(Duration::from_secs(2))
        ///     .discover(DiscoverOptions::new("AudioService").timeout(Duration::from_secs(10)))
        ///     .await?;
        /// # Ok(()) }
        /// ```
        pub async fn discover(self, opts: impl Into<DiscoverOptions>) -> Result<RpcClient> {
            let opts = opts.into();
            let source = opts.to_source()?;
            let mut browser = source.watch().map_err(discovery_error)?;
            let deadline = tokio::time::Instant::now() + opts.timeout;
            let mut attempts = FuturesUnordered::new();
            // (full name, fingerprint, address) already tried: a repeated
            // resolve only adds attempts for what is new.
            let mut tried: HashSet<(String, Option<String>, SocketAddr)> = HashSet::new();
            let mut failures = Vec::new();
            loop {
                tokio::select! {
                    Some(result) = attempts.next(), if !attempts.is_empty() => match result {
                        Ok(client) => return Ok(client),
                        Err(why) => failures.push(why),
                    },
                    event = browser.next() => match event {
                        Some(Ok(BrowseEvent::Appeared(inst) | BrowseEvent::Updated(inst))) => {
                            let fp = inst.fingerprint();
                            let fresh: Vec<SocketAddr> = inst
                                .addrs()
                                .iter()
                                .copied()
                                .filter(|a| tried.insert((inst.fullname().to_owned(), fp.clone(), *a)))
                                .collect();
                            if fresh.is_empty() {
                                continue;
                            }
                            let delay = if fresh.iter().any(SocketAddr::is_ipv4) {
                                Duration::ZERO
                            } else {
                                IPV6_ONLY_DELAY
                            };
                            match trust_for(&inst, &opts) {
                                Ok(trust) => {
                                    let attempt = connect_instance(self.clone(), trust, describe(&inst), fresh);
                                    attempts.push(async move {
                                        tokio::time::sleep(delay).await;
                                        attempt.await
                                    });
                                }
                                Err(why) => failures.push(format!("{}: {why}", describe(&inst))),
                            }
                        }
                        // A failed refresh (DNS-SD): listed if nothing works in the end.
                        Some(Err(e)) => failures.push(e.to_string()),
                        Some(Ok(_)) => {}
                        None => {
                            return Err(Error::Discovery(format!(
                                "{} stopped while looking for `{}`",
                                source, opts.name
                            )))
                        }
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(timeout_error(&opts, &source, browser.other_names(), failures));
                    }
                }
            }
        }

        /// Collects the instances of a service seen within the timeout, then
        /// connects to each (concurrently, like [`ClientBuilder::discover`]).
        /// Returns the clients that connected; fails with
        /// [`Error::DiscoveryTimeout`] when none did.
        pub async fn discover_all(self, opts: impl Into<DiscoverOptions>) -> Result<Vec<RpcClient>> {
            let opts = opts.into();
            let source = opts.to_source()?;
            let mut browser = source.watch().map_err(discovery_error)?;
            let mut failures = Vec::new();
            let _ = tokio::time::timeout(opts.timeout, async {
                while let Some(event) = browser.next().await {
                    if let Err(e) = event {
                        failures.push(e.to_string());
                    }
                }
            })
            .await;
            let mut attempts = Vec::new();
            for inst in browser.instances() {
                match trust_for(&inst, &opts) {
                    Ok(trust) => attempts.push(connect_instance(
                        self.clone(),
                        trust,
                        describe(&inst),
                        inst.addrs().to_vec(),
                    )),
                    Err(why) => failures.push(format!("{}: {why}", describe(&inst))),
                }
            }
            let mut clients = Vec::new();
            for r in futures::future::join_all(attempts).await {
                match r {
                    Ok(c) => clients.push(c),
                    Err(why) => failures.push(why),
                }
            }
            if clients.is_empty() {
                return Err(timeout_error(&opts, &source, browser.other_names(), failures));
            }
            Ok(clients)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn timeout_error_names_service_interfaces_duration_others_and_failures() {
            let opts = DiscoverOptions::new("AudioService")
                .timeout(Duration::from_millis(1500))
                .interfaces(Interfaces::Loopback);
            let source = opts.to_source().unwrap();
            let e = timeout_error(
                &opts,
                &source,
                vec!["Camera".into()],
                vec!["`AudioService` at [127.0.0.1:9]: could not connect".into()],
            );
            assert_eq!(
                e.to_string(),
                "no usable instance of `AudioService` discovered on the IPv4 loopback interface within \
                 1.5s; 1 instance(s) of other names seen (`Camera`); 1 instance(s) of `AudioService` \
                 found but unusable: `AudioService` at [127.0.0.1:9]: could not connect"
            );
        }
    }
}
