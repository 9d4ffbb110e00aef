//! Stage 2 of the configuration: `RawLine`s → `Config`. Applies the option table in file
//! order, copies the global part's service-level values into every section, expands
//! `include = DIR`, and runs stunnel's end-of-section checks.
//! Reads the include directories; touches nothing else on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{CheckError, ConfigError, LineError};
use super::lexer::{self, LineKind, RawLine};
use super::options::{self, Handler, Names, Scope, Target};
use super::protocol_names;
use super::types::{Config, Foreground, GlobalOptions, ServiceOptions, TlsOptions};

/// `include` inside included files is allowed; this bounds a directory that includes itself.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Parses the text of the main configuration file named `file` (as errors should name it).
/// `names` says whether `setuid`/`setgid` names are looked up (see `options::Names`).
pub fn parse(file: &str, bytes: &[u8], names: Names) -> Result<Config, ConfigError> {
    let mut parser = Parser {
        global: GlobalOptions::default(),
        defaults: ServiceOptions::default(),
        current: None,
        services: Vec::new(),
        names,
        not_checked: Vec::new(),
        includes: Vec::new(),
    };
    parser.feed_all(&lexer::lex(&Arc::from(file), bytes), 0)?;
    parser.finish(file)
}

struct Parser {
    global: GlobalOptions,
    /// The global part's service-level values; each section starts as a copy.
    defaults: ServiceOptions,
    /// The section being read, once the first header has been seen.
    current: Option<ServiceOptions>,
    services: Vec<ServiceOptions>,
    names: Names,
    /// Notes for values not checked against this host (`Config::not_checked`).
    not_checked: Vec<String>,
    /// The `include` directories read (`Config::includes`).
    includes: Vec<PathBuf>,
}

/// Wraps what went wrong with the line it came from.
fn line_error(line: &RawLine, error: impl Into<LineError>) -> ConfigError {
    ConfigError::Line {
        file: Arc::clone(&line.file),
        line: line.number,
        raw: line.text.clone(),
        error: error.into(),
    }
}

impl Parser {
    fn feed_all(&mut self, lines: &[RawLine], depth: usize) -> Result<(), ConfigError> {
        for line in lines {
            self.feed(line, depth)?;
        }
        Ok(())
    }

    fn feed(&mut self, line: &RawLine, depth: usize) -> Result<(), ConfigError> {
        match &line.kind {
            LineKind::NoEquals => Err(line_error(line, LineError::NoEquals)),
            LineKind::Section(name) => {
                match self.current.take() {
                    Some(done) => {
                        let checked = check_service(done, &self.services)?;
                        self.services.push(checked);
                    }
                    None => check_global(&self.global)?,
                }
                let mut section = self.defaults.clone();
                section.name = name.clone();
                self.current = Some(section);
                Ok(())
            }
            LineKind::Option { name, value } => self.apply(line, name, value, depth),
        }
    }

    fn apply(
        &mut self,
        line: &RawLine,
        name: &str,
        value: &str,
        depth: usize,
    ) -> Result<(), ConfigError> {
        let in_global_part = self.current.is_none();
        let spec = options::find(name)
            .filter(|spec| in_global_part || spec.scope == Scope::Service)
            .ok_or_else(|| line_error(line, LineError::NotValidHere))?;
        match &spec.handler {
            Handler::NotYet => Err(line_error(line, LineError::NotYet(spec.name))),
            Handler::Engine => Err(line_error(line, options::engine_refusal(spec.name))),
            Handler::Include => self.include(line, value, depth),
            Handler::Set(setter) => {
                let service = self.current.as_mut().unwrap_or(&mut self.defaults);
                let mut target = Target {
                    global: &mut self.global,
                    service,
                    in_global_part,
                    names: self.names,
                    not_checked: None,
                };
                setter
                    .apply(&mut target, value)
                    .map_err(|error| line_error(line, error))?;
                if let Some(what) = target.not_checked {
                    self.not_checked.push(format!(
                        "{}:{}: \"{}\": {what} not checked: not looked up on this host",
                        line.file, line.number, line.text
                    ));
                }
                Ok(())
            }
        }
    }

    /// Reads every regular file of `dir` in byte order of their names (alphasort), as if
    /// pasted in place of the `include` line.
    fn include(&mut self, line: &RawLine, dir: &str, depth: usize) -> Result<(), ConfigError> {
        let failed = |_| line_error(line, LineError::Include);
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(line_error(line, LineError::IncludeTooDeep));
        }
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(failed)?
            .filter_map(Result::ok)
            .filter(|entry| std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()))
            .map(|entry| entry.file_name())
            .collect();
        files.sort();
        self.includes.push(PathBuf::from(dir));
        for name in files {
            let path = Path::new(dir).join(&name);
            let bytes = std::fs::read(&path).map_err(failed)?;
            let display: Arc<str> = Arc::from(path.to_string_lossy().as_ref());
            self.feed_all(&lexer::lex(&display, &bytes), depth + 1)?;
        }
        Ok(())
    }

    fn finish(mut self, _file: &str) -> Result<Config, ConfigError> {
        match self.current.take() {
            Some(last) => {
                let checked = check_service(last, &self.services)?;
                self.services.push(checked);
            }
            None => {
                check_global(&self.global)?;
                check_inetd(&self.defaults)?;
            }
        }
        Ok(Config {
            source: _file.to_string(),
            global: self.global,
            defaults: self.defaults,
            services: self.services,
            not_checked: self.not_checked,
            includes: self.includes,
        })
    }
}

/// Checks of the global part, run at the first section header (or at the end).
fn check_global(global: &GlobalOptions) -> Result<(), ConfigError> {
    let daemon = global.foreground == Foreground::No;
    let error = |error| ConfigError::Global { error };
    if daemon && global.output.as_ref().is_some_and(|p| p.is_relative()) {
        return Err(error(CheckError::LogFileNotAbsolute));
    }
    if daemon && global.pid.as_ref().is_some_and(|p| p.is_relative()) {
        return Err(error(CheckError::PidFileNotAbsolute));
    }
    if global.compression.is_some() {
        // TLS compression (CRIME) is compiled out of every distribution's OpenSSL.
        return Err(ConfigError::GlobalTls {
            cause: CheckError::CompressionUnsupported,
        });
    }
    Ok(())
}

/// The checks shared by a section and inetd mode.
fn check_tls(tls: &TlsOptions, client: bool) -> Result<(), CheckError> {
    if !client && tls.cert.is_none() && tls.psk_secrets.is_none() {
        return Err(CheckError::NoCertificate);
    }
    if let (Some(min), Some(max)) = (tls.ssl_version_min, tls.ssl_version_max) {
        if min > max {
            return Err(CheckError::VersionRange);
        }
    }
    if tls.verify.any_check() && tls.ca_file.is_none() && tls.ca_path.is_none() {
        return Err(CheckError::NoCa);
    }
    let checks =
        !tls.check_host.is_empty() || !tls.check_email.is_empty() || !tls.check_ip.is_empty();
    if checks && !tls.verify.any_check() {
        return Err(CheckError::NoVerify);
    }
    Ok(())
}

/// End-of-section checks (stunnel's `init_section`). `earlier` are the sections before
/// this one: a server `sni = PRIMARY:PATTERN` must name one of them.
fn check_service(
    service: ServiceOptions,
    earlier: &[ServiceOptions],
) -> Result<ServiceOptions, ConfigError> {
    let error = |error| ConfigError::Service {
        name: service.name.clone(),
        error,
    };
    check_tls(&service.tls, service.client).map_err(error)?;
    let virtual_host = match service.server_sni() {
        Some(Ok((primary, _))) => {
            let found = earlier
                .iter()
                .any(|s| s.name == primary && !s.client && s.server_sni().is_none());
            if !found {
                return Err(error(CheckError::SniSectionNotFound));
            }
            true
        }
        Some(Err(())) => return Err(error(CheckError::SniSyntax)),
        None => false,
    };
    if !service.redirect.is_empty() {
        if service.client {
            return Err(error(CheckError::RedirectInClient));
        }
        if !service.tls.verify.any_check() {
            return Err(error(CheckError::RedirectWithoutVerify));
        }
    }
    if let Some(message) = protocol_problem(&service) {
        return Err(error(CheckError::Protocol(message)));
    }
    // Endpoints: accept (or a virtual host's sni line) on one side, connect
    // or exec on the other; exec + connect without accept is the exec+connect form.
    let local = !service.accept.is_empty() || virtual_host;
    // A SOCKS server learns its target from each client.
    let socks = !service.client && service.protocol == Some("socks");
    let remote = !service.connect.is_empty()
        || service.exec.is_some()
        || socks
        || service.transparent_destination;
    let exec_connect = service.exec.is_some() && !service.connect.is_empty();
    if !((local && remote) || exec_connect) {
        return Err(error(CheckError::TwoEndpoints));
    }
    Ok(service)
}

/// A `protocol` that this side cannot speak, or an authentication it does not have.
fn protocol_problem(service: &ServiceOptions) -> Option<String> {
    let protocol = protocol_names::find(service.protocol?)?;
    if let Some(message) = protocol_names::unsupported_on(protocol, service.client) {
        return Some(message);
    }
    match (protocol.name, service.protocol_authentication) {
        ("connect", Some("ntlm")) => Some("protocolAuthentication = ntlm is not supported yet".into()),
        ("smtp", Some(_)) if service.protocol_username.is_some() => {
            Some("SMTP authentication (protocolAuthentication with protocolUsername) is not supported yet".into())
        }
        _ => None,
    }
}

/// Checks of a file without sections (inetd mode). The certificate check comes first, as
/// in stunnel; endpoints count by kind (several `connect` addresses are one endpoint).
fn check_inetd(defaults: &ServiceOptions) -> Result<(), ConfigError> {
    let error = |error| ConfigError::Inetd { error };
    check_tls(&defaults.tls, defaults.client).map_err(error)?;
    if !defaults.accept.is_empty() {
        return Err(error(CheckError::AcceptInInetd));
    }
    let endpoints =
        usize::from(!defaults.connect.is_empty()) + usize::from(defaults.exec.is_some());
    if endpoints != 1 {
        return Err(error(CheckError::InetdEndpoints));
    }
    Ok(())
}
