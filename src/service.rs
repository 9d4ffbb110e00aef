//! Services as built from the configuration: each `[section]` becomes a `ServiceCtx` (TLS
//! context loaded, addresses resolved, SNI virtual hosts attached), shared read-only by the
//! service's listener thread and its sessions; and `StartupError`, why the process could
//! not start.
//!
//! Owns building and the per-service values sessions read (target addresses, `failover`
//! rotation, the SNI name, the `health` handle). Must not bind, accept or spawn anything:
//! binding is `listeners`, the listener thread `accept`, sessions `session`.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::accounting::ServiceSlots;
use crate::certs::{self, CertInfo};
use crate::config::{Config, ConfigError, ServiceOptions};
use crate::health::{self, Health, Trigger};
use crate::net::{self, Addr, Endpoint};
use crate::tls::{self, ServiceTls, TlsSetupError, VirtualHost};

/// Everything a session of one service needs, shared read-only by its sessions.
pub struct ServiceCtx {
    pub opts: ServiceOptions,
    pub tls: ServiceTls,
    /// Their addresses resolved at startup; `None` with `delay = yes` or when a target
    /// did not resolve then, so that each connection resolves again (stunnel's "delaying
    /// DNS lookup").
    pub connect_addrs: Option<Vec<Addr>>,
    /// Listening addresses (before binding; port 0 stays 0 here).
    pub accept_addrs: Vec<Addr>,
    /// Client side: the SNI name to send, if any.
    pub sni: Option<String>,
    /// `failover = rr`: where the next connection starts in the target list.
    next_target: AtomicUsize,
    /// Server side: sections that are virtual hosts of this one (`sni = THIS:PATTERN`).
    pub virtual_hosts: Vec<(String, Arc<ServiceCtx>)>,
    /// This service's live sessions against its `maxConnections`.
    pub slots: Arc<ServiceSlots>,
    /// Whether the far side answers (`pauseWhenDown`); shared by every configuration of
    /// the service's name, so it outlives a reload.
    pub health: Arc<Health>,
    /// What the status endpoint counts for it; by name, so it outlives a reload.
    pub counters: Arc<crate::metrics::ServiceCounters>,
    /// The certificates its files hold (`cert` and its chain, `CAfile`), read when it was
    /// built (none with `load_files = false`); what the expiry warnings and `/status` list.
    pub certificates: Vec<CertInfo>,
}

/// Why the process could not start. Each displays as the one line stunnel would print.
#[derive(Debug)]
pub enum StartupError {
    Config(ConfigError),
    Tls {
        service: String,
        error: TlsSetupError,
    },
    Resolve {
        service: String,
        what: &'static str,
        detail: String,
    },
    Bind {
        service: String,
    },
    Unsupported(String),
    Io {
        what: String,
        error: io::Error,
    },
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartupError::Config(e) => write!(f, "{e}"),
            StartupError::Tls { service, error } => {
                write!(
                    f,
                    "Service [{service}]: Failed to initialize TLS context: {error}"
                )
            }
            StartupError::Resolve {
                service,
                what,
                detail,
            } => write!(
                f,
                "Service [{service}]: Cannot resolve {what} target: {detail}"
            ),
            StartupError::Bind { service } => write!(f, "Binding service [{service}] failed"),
            StartupError::Unsupported(what) => write!(f, "{what}"),
            StartupError::Io { what, error } => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for StartupError {}

impl From<ConfigError> for StartupError {
    fn from(e: ConfigError) -> Self {
        StartupError::Config(e)
    }
}

/// Builds every service: TLS contexts (certificates and keys are read here unless
/// `load_files` is false) and addresses.
pub fn build(config: &Config, load_files: bool) -> Result<Vec<Arc<ServiceCtx>>, StartupError> {
    if config.is_inetd_mode() {
        // The global part is the one service, served on stdin/stdout (inetd mode).
        let mut opts = config.defaults.clone();
        opts.name = config.global.service_name.clone();
        let counters = crate::metrics::service(&opts.name);
        return Ok(vec![Arc::new(build_service(
            &opts,
            load_files,
            Vec::new(),
            counters,
        )?)]);
    }
    // Virtual hosts first: their contexts go into their primary's SNI callback.
    let mut virtual_hosts: Vec<(String, String, Arc<ServiceCtx>)> = Vec::new();
    for opts in &config.services {
        if let Some(Ok((primary, pattern))) = opts.server_sni() {
            // Its sessions are the primary's, as the status endpoint lists them.
            let counters = crate::metrics::service(primary);
            let ctx = Arc::new(build_service(opts, load_files, Vec::new(), counters)?);
            virtual_hosts.push((primary.to_string(), pattern.to_string(), ctx));
        }
    }
    let mut services = Vec::new();
    for opts in config.services.iter().filter(|o| o.server_sni().is_none()) {
        let mine: Vec<(String, Arc<ServiceCtx>)> = virtual_hosts
            .iter()
            .filter(|(primary, _, _)| *primary == opts.name)
            .map(|(_, pattern, ctx)| (pattern.clone(), Arc::clone(ctx)))
            .collect();
        let counters = crate::metrics::service(&opts.name);
        services.push(Arc::new(build_service(opts, load_files, mine, counters)?));
    }
    Ok(services)
}

/// `counters`: where its events are counted (a virtual host's are its primary's).
fn build_service(
    opts: &ServiceOptions,
    load_files: bool,
    virtual_hosts: Vec<(String, Arc<ServiceCtx>)>,
    counters: Arc<crate::metrics::ServiceCounters>,
) -> Result<ServiceCtx, StartupError> {
    let resolve_error = |what: &'static str, detail: String| StartupError::Resolve {
        service: opts.name.clone(),
        what,
        detail,
    };
    let mut accept_addrs = Vec::new();
    for value in &opts.accept {
        let addrs = Endpoint::parse(value)
            .and_then(|e| e.resolve_accept())
            .map_err(|detail| resolve_error("accept", detail))?;
        accept_addrs.extend(addrs);
    }
    // The default SNI name: the host of protocolHost (the real destination behind a
    // proxy), else of the first connect target.
    let first_host = opts
        .protocol_host
        .iter()
        .chain(opts.connect.first())
        .find_map(|value| {
            Endpoint::parse(value)
                .ok()
                .and_then(|e| e.host().map(str::to_string))
        });
    let connect_addrs = if opts.delay {
        None
    } else {
        match resolve_all(&opts.connect) {
            Ok(addrs) => Some(addrs),
            Err(detail) => {
                log_err!("{detail}");
                log_info!("Cannot resolve connect target - delaying DNS lookup");
                None
            }
        }
    };
    let tls_hosts = virtual_hosts
        .iter()
        .map(|(pattern, ctx)| VirtualHost::new(pattern, &ctx.tls))
        .collect();
    let tls = tls::build_context(&opts.tls, &tls_facts(opts), load_files, tls_hosts).map_err(
        |error| StartupError::Tls {
            service: opts.name.clone(),
            error,
        },
    )?;
    if opts.client && !opts.tls.verify.any_check() && opts.tls.psk_secrets.is_none() {
        log_warning!(
            "Service [{}] needs authentication to prevent MITM attacks: the client verifies no server certificate (set verifyChain or verifyPeer with CAfile)",
            opts.name
        );
    }
    Ok(ServiceCtx {
        sni: client_sni(opts, first_host),
        opts: opts.clone(),
        tls,
        connect_addrs,
        accept_addrs,
        // stunnel starts round robin at a random target, so that restarted clients do
        // not all hit the first server.
        next_target: AtomicUsize::new(random_index()),
        virtual_hosts,
        slots: Arc::new(ServiceSlots::new(opts.max_connections)),
        health: health::for_service(&opts.name),
        counters,
        certificates: if load_files {
            certs::info::collect(&opts.name, &opts.tls)
        } else {
            Vec::new()
        },
    })
}

/// Every address of the `connect` values, in order.
pub fn resolve_all(values: &[String]) -> Result<Vec<Addr>, String> {
    let mut addrs = Vec::new();
    for value in values {
        addrs.extend(Endpoint::parse(value).and_then(|e| e.resolve_connect())?);
    }
    Ok(addrs)
}

impl ServiceCtx {
    /// Whether this service pauses while its far side is down: `pauseWhenDown = yes` and a
    /// fixed `connect` target behind a listener. Not for `exec` (a local program), not
    /// where each client picks the target (`transparent = destination`, SOCKS), not for
    /// inetd mode or exec+connect services (nothing to refuse).
    pub fn pauses(&self) -> bool {
        let o = &self.opts;
        o.pause_when_down
            && !o.connect.is_empty()
            && o.exec.is_none()
            && !o.accept.is_empty()
            && !o.transparent_destination
            && o.protocol
                .and_then(crate::protocol::find)
                .is_none_or(|p| p.server_chooses_target.is_none())
    }

    /// How this service's outgoing connections are made: TIMEOUTconnect, `socket = r:…`
    /// and `local`, as `net::connect` takes them.
    pub fn connect_spec(&self) -> net::connect::Spec<'_> {
        net::connect::Spec {
            timeout: self.opts.timeouts.connect,
            socket_options: &self.opts.socket_options,
            source: self.opts.local.map(|ip| net::connect::Source {
                ip,
                transparent: false,
            }),
            failures: Some(&self.counters),
        }
    }

    /// The certificates of this service and of its SNI virtual hosts.
    pub fn all_certificates(&self) -> impl Iterator<Item = &CertInfo> {
        self.certificates.iter().chain(
            self.virtual_hosts
                .iter()
                .flat_map(|(_, host)| host.certificates.iter()),
        )
    }

    /// The `exec` program, as `exec::spawn` takes it.
    pub fn program(&self) -> Option<crate::exec::Program<'_>> {
        Some(crate::exec::Program {
            path: self.opts.exec.as_deref()?,
            args: &self.opts.exec_args,
            pty: self.opts.pty,
        })
    }

    /// What a session of this service saw of its far side (ignored unless it `pauses`).
    pub fn far_side_news(&self, trigger: Trigger) {
        if self.pauses() {
            self.health.report(trigger);
        }
    }

    /// A session of this service reached its far side (connected; in client mode, its TLS
    /// handshake done): what a listener resuming after a pause waits for before it serves
    /// more than one connection.
    pub fn far_side_reached(&self) {
        if self.pauses() {
            self.health.reached();
        }
    }

    /// A session of this service was redirected (`redirect`): it tells nothing of the far
    /// side, and a listener waiting on it as a canary must not wait in vain.
    pub fn far_side_untested(&self) {
        if self.pauses() {
            self.health.untested();
        }
    }

    /// After a server handshake: the virtual host the client's SNI name selected, if any
    /// (the same match the ClientHello callback made).
    pub fn virtual_host_for(&self, ssl: &openssl::ssl::SslRef) -> Option<&Arc<ServiceCtx>> {
        let name = ssl.servername(openssl::ssl::NameType::HOST_NAME)?;
        self.virtual_hosts
            .iter()
            .find(|(pattern, _)| tls::sni_matches(pattern, name))
            .map(|(_, ctx)| ctx)
    }

    /// The addresses to try for a new connection: those resolved at startup, or a fresh
    /// lookup if startup could not resolve them. `None` (logged) if none resolve now.
    /// With `failover = rr` (and no `delay`, which forces prio as in stunnel) each call
    /// starts one target further.
    pub fn target_addrs(&self) -> Option<Vec<Addr>> {
        let mut addrs = match &self.connect_addrs {
            Some(addrs) => addrs.clone(),
            None => match resolve_all(&self.opts.connect) {
                Ok(addrs) => addrs,
                Err(detail) => {
                    log_err!("{detail}");
                    return None;
                }
            },
        };
        if self.opts.failover_rr && !self.opts.delay && !addrs.is_empty() {
            let start = self.next_target.fetch_add(1, Ordering::Relaxed) % addrs.len();
            addrs.rotate_left(start);
        }
        Some(addrs)
    }
}

fn random_index() -> usize {
    let mut bytes = [0u8; 8];
    let _ = openssl::rand::rand_bytes(&mut bytes);
    usize::from_ne_bytes(bytes) % 1024
}

/// The service facts `tls` needs besides `opts.tls` (its narrow view of the service).
fn tls_facts(opts: &ServiceOptions) -> tls::ServiceFacts<'_> {
    tls::ServiceFacts {
        name: &opts.name,
        role: if opts.client {
            tls::Role::Client
        } else {
            tls::Role::Server
        },
        redirect: !opts.redirect.is_empty(),
        virtual_host: opts.server_sni().is_some(),
        ocsp_timeout: opts.timeouts.ocsp,
    }
}

/// The SNI name a client sends: `sni` if set (empty: none), else the host of
/// `protocolHost` or of the first `connect` when it is a name (an IP literal is not a
/// valid SNI name), else none.
fn client_sni(opts: &ServiceOptions, first_host: Option<String>) -> Option<String> {
    if !opts.client {
        return None;
    }
    match &opts.tls.sni {
        Some(name) if name.is_empty() => None,
        Some(name) => Some(name.clone()),
        None => first_host.filter(|h| h.parse::<std::net::IpAddr>().is_err()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The services of a configuration given as text, built without reading any file.
    fn built(text: &str) -> Vec<Arc<ServiceCtx>> {
        let config = crate::config::parse_bytes("test.conf", text.as_bytes()).expect("valid");
        build(&config, false).expect("builds")
    }

    fn one(text: &str) -> Arc<ServiceCtx> {
        built(text).pop().expect("one service")
    }

    fn ports(addrs: &[Addr]) -> Vec<u16> {
        addrs
            .iter()
            .map(|a| match a {
                Addr::Inet(i) => i.port(),
                Addr::Unix(_) => 0,
            })
            .collect()
    }

    const THREE_TARGETS: &str = "[c]\nclient = yes\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:1\nconnect = 127.0.0.1:2\nconnect = 127.0.0.1:3\n";

    #[test]
    fn failover_prio_keeps_the_order_and_rr_rotates_it() {
        let prio = one(THREE_TARGETS);
        for _ in 0..3 {
            assert_eq!(ports(&prio.target_addrs().unwrap()), [1, 2, 3]);
        }
        let rr = one(&format!("{THREE_TARGETS}failover = rr\n"));
        let firsts: Vec<u16> = (0..6)
            .map(|_| ports(&rr.target_addrs().unwrap())[0])
            .collect();
        // Each call starts one target further, from wherever the random start was.
        for pair in firsts.windows(2) {
            assert_eq!(pair[1], pair[0] % 3 + 1, "{firsts:?}");
        }
    }

    /// `delay = yes` resolves per connection and, as in stunnel, forces prio order.
    #[test]
    fn delay_resolves_per_connection_in_prio_order() {
        let s = one(&format!("{THREE_TARGETS}failover = rr\ndelay = yes\n"));
        assert!(s.connect_addrs.is_none());
        for _ in 0..3 {
            assert_eq!(ports(&s.target_addrs().unwrap()), [1, 2, 3]);
        }
    }

    #[test]
    fn the_sni_name_a_client_sends() {
        let sni = |extra: &str| {
            one(&format!(
                "[c]\nclient = yes\naccept = 127.0.0.1:0\nconnect = {extra}\n"
            ))
            .sni
            .clone()
        };
        assert_eq!(sni("localhost:514"), Some("localhost".into()));
        assert_eq!(sni("127.0.0.1:514"), None, "an IP literal is no SNI name");
        assert_eq!(
            sni("127.0.0.1:514\nsni = logs.example"),
            Some("logs.example".into())
        );
        assert_eq!(sni("localhost:514\nsni ="), None, "empty: none");
        assert_eq!(
            sni("127.0.0.1:3128\nprotocol = connect\nprotocolHost = logs.example:6514"),
            Some("logs.example".into()),
            "behind a proxy: the real destination"
        );
    }

    /// What `tls` is told about a service besides its `TlsOptions`.
    #[test]
    fn the_facts_tls_gets() {
        let text = "cert = /c.pem\n\
            [srv]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:1\nverifyChain = yes\nCAfile = /ca.pem\nredirect = 127.0.0.1:2\nTIMEOUTocsp = 7\n\
            [vhost]\nsni = srv:*.example.org\nconnect = 127.0.0.1:3\n\
            [cli]\nclient = yes\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:4\nsni = name.example\n";
        let config = crate::config::parse_bytes("test.conf", text.as_bytes()).expect("valid");
        let [srv, vhost, cli] = &config.services[..] else {
            panic!("three sections");
        };
        let facts = tls_facts(srv);
        assert_eq!(facts.name, "srv");
        assert_eq!(facts.role, tls::Role::Server);
        assert!(facts.redirect && !facts.virtual_host);
        assert_eq!(facts.ocsp_timeout, std::time::Duration::from_secs(7));
        let facts = tls_facts(vhost);
        assert!(facts.virtual_host && !facts.redirect);
        assert_eq!(facts.ocsp_timeout, std::time::Duration::from_secs(5));
        let facts = tls_facts(cli);
        assert_eq!(facts.role, tls::Role::Client);
        assert!(!facts.virtual_host, "a client's sni is the name it sends");
    }

    /// Where `pauseWhenDown` applies: a fixed `connect` target behind a listener.
    #[test]
    fn which_services_pause() {
        let pauses = |body: &str| one(&format!("[s]\nclient = yes\n{body}\n")).pauses();
        assert!(pauses("accept = 127.0.0.1:0\nconnect = 127.0.0.1:1"));
        assert!(!pauses(
            "accept = 127.0.0.1:0\nconnect = 127.0.0.1:1\npauseWhenDown = no"
        ));
        assert!(!pauses("accept = 127.0.0.1:0\nexec = /bin/cat"));
        assert!(!pauses("connect = 127.0.0.1:1\nexec = /bin/cat"));
        assert!(!pauses(
            "accept = 127.0.0.1:0\nconnect = 127.0.0.1:1\ntransparent = destination"
        ));
    }
}
