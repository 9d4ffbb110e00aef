//! The command line, stunnel-compatible: `rstunnel [FILE]`, `-fd N`, `-help`, `-version`,
//! `-sockets`, `-options` (one dash, any case, as stunnel reads them), plus `--check FILE`
//! and `--check --no-files FILE`, and `--status [ADDRESS|CONFIG]` (`status::client`).
//! Turns them into one of the `run_*` functions below and an exit code. Info output goes to stderr, as stunnel's does.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};

use crate::config::{self, options, Config};
use crate::log::{self, LogSetup};
use crate::runtime::configuration_failed;
use crate::service::{self, StartupError};

/// Where stunnel (and so rstunnel) looks without a FILE argument.
pub const DEFAULT_CONFIG: &str = "/etc/stunnel/stunnel.conf";

fn command() -> Command {
    Command::new("rstunnel")
        .about("TLS tunnel configured by stunnel.conf files")
        .disable_version_flag(true)
        .disable_help_flag(true)
        .arg(
            Arg::new("file")
                .value_name("FILE")
                .help("configuration file (default /etc/stunnel/stunnel.conf)"),
        )
        .arg(
            Arg::new("check")
                .long("check")
                .action(ArgAction::SetTrue)
                .help("validate FILE, load its certificates, bind nothing"),
        )
        .arg(
            Arg::new("no-files")
                .long("no-files")
                .action(ArgAction::SetTrue)
                .requires("check")
                .help("with --check: do not read certificates, keys or CA files, nor look up setuid/setgid names"),
        )
        .arg(
            Arg::new("status")
                .long("status")
                .value_name("ADDRESS|CONFIG")
                .num_args(0..=1)
                .default_missing_value("")
                .conflicts_with_all(["file", "check", "fd"])
                .help("print a running instance's status: its endpoint (PORT, HOST:PORT, a socket) or a configuration naming it (default /etc/stunnel/stunnel.conf)"),
        )
        .arg(
            Arg::new("fd")
                .long("fd")
                .value_name("N")
                .help("read the configuration from file descriptor N"),
        )
        .arg(
            Arg::new("help")
                .long("help")
                .action(ArgAction::SetTrue)
                .help("print the options and their meaning"),
        )
        .arg(
            Arg::new("version")
                .long("version")
                .action(ArgAction::SetTrue)
                .help("print versions and default option values"),
        )
        .arg(
            Arg::new("options")
                .long("options")
                .action(ArgAction::SetTrue)
                .help("print the names accepted by 'options ='"),
        )
        .arg(
            Arg::new("sockets")
                .long("sockets")
                .action(ArgAction::SetTrue)
                .help("print the default socket options"),
        )
}

/// stunnel's single-dash flags (any case) become clap's long flags; anything else passes.
fn normalize(args: Vec<OsString>) -> Vec<OsString> {
    const FLAGS: [&str; 5] = ["help", "version", "options", "sockets", "fd"];
    args.into_iter()
        .enumerate()
        .map(|(i, arg)| {
            let text = arg.to_string_lossy().to_ascii_lowercase();
            match text.strip_prefix('-') {
                Some(flag) if i > 0 && !flag.starts_with('-') && FLAGS.contains(&flag) => {
                    OsString::from(format!("--{flag}"))
                }
                _ => arg,
            }
        })
        .collect()
}

/// Runs rstunnel with `args` (including argv[0]) and returns the process exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    let matches = match command().try_get_matches_from(normalize(args)) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return 1;
        }
    };
    if matches.get_flag("help") {
        print_help();
        return 0;
    }
    if matches.get_flag("version") {
        print_version();
        return 0;
    }
    if matches.get_flag("options") {
        print_banner();
        for (name, _) in crate::openssl_names::SSL_OPTION_NAMES {
            eprintln!("options = {name}");
        }
        return 0;
    }
    if matches.get_flag("sockets") {
        print_banner();
        eprintln!(
            "Socket option defaults: a:SO_REUSEADDR=yes, l:TCP_NODELAY=yes, r:TCP_NODELAY=yes"
        );
        return 0;
    }
    if let Some(arg) = matches.get_one::<String>("status") {
        let arg = Some(arg.as_str()).filter(|a| !a.is_empty());
        return crate::status::client::run(arg, DEFAULT_CONFIG);
    }
    // `--no-files` checks a config away from its host: user and group names are host
    // state like certificate files, so they are not looked up either (config::Names).
    let names = match matches.get_flag("no-files") {
        true => config::Names::Skip,
        false => config::Names::LookUp,
    };
    let loaded = match matches.get_one::<String>("fd") {
        Some(fd) => load_from_fd(fd, names),
        None => {
            let file = matches
                .get_one::<String>("file")
                .map_or(DEFAULT_CONFIG, String::as_str);
            config::load_with(Path::new(file), names).map_err(StartupError::from)
        }
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => return configuration_failed(&e),
    };
    if matches.get_flag("check") {
        return run_check(&config, !matches.get_flag("no-files"));
    }
    let source = match matches.get_one::<String>("fd") {
        Some(_) => None,
        None => Some(PathBuf::from(&config.source)),
    };
    crate::runtime::run(config, source)
}

fn load_from_fd(fd: &str, names: config::Names) -> Result<Config, StartupError> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let number: i32 = fd
        .parse()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| StartupError::Unsupported("Invalid file descriptor number".into()))?;
    // SAFETY: the user handed us this descriptor to read the configuration from; we take
    // ownership and close it after reading, as stunnel does.
    let mut file = unsafe { std::fs::File::from_raw_fd(number) };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|error| StartupError::Io {
            what: format!("Reading configuration from descriptor {number}"),
            error,
        })?;
    Ok(config::parse_bytes_with(
        &format!("descriptor {number}"),
        &bytes,
        names,
    )?)
}

/// `--check`: everything short of binding. Prints `configuration OK` or the error; with
/// `--no-files`, first one `note:` line on stderr per user or group name not looked up.
fn run_check(config: &Config, load_files: bool) -> i32 {
    for note in &config.not_checked {
        eprintln!("note: {note}");
    }
    let _ = log::configure(&LogSetup {
        stderr: true,
        output: None,
        syslog: None,
        level: log::Level::Warning,
    });
    match service::build(config, load_files) {
        Ok(services) => {
            println!(
                "configuration OK: {} service(s) in {}",
                services.len(),
                config.source
            );
            0
        }
        Err(e) => configuration_failed(&e),
    }
}

fn print_banner() {
    eprintln!(
        "rstunnel {} on {}-{} platform",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS
    );
    eprintln!("Compiled with {}", crate::openssl_names::built_version());
    eprintln!("Running  with {}", crate::openssl_names::running_version());
    eprintln!("Threading:PTHREAD Sockets:POLL,IPv6 TLS:SNI");
    eprintln!("{}", crate::sandbox::support_line());
    eprintln!(" ");
}

fn print_option_lines(scope: options::Scope, with_defaults: bool) {
    // The defaults tls applies (`curves` depends on the running OpenSSL) over the table's.
    let applied = crate::tls::context::applied_defaults();
    for spec in options::OPTIONS.iter().filter(|s| s.scope == scope) {
        if with_defaults {
            let applied = applied.iter().find(|(name, _)| *name == spec.name);
            if let Some(default) = applied.map(|(_, v)| v.as_str()).or(spec.default) {
                eprintln!("{:<22} = {}", spec.name, default);
            }
        } else {
            let note = spec
                .handler
                .help_note()
                .map(|note| format!(" ({note})"))
                .unwrap_or_default();
            eprintln!("{:<22} = {}{}", spec.name, spec.help, note);
        }
    }
}

fn print_help() {
    print_banner();
    eprintln!("Global options:");
    print_option_lines(options::Scope::Global, false);
    eprintln!(" ");
    eprintln!("Service-level options:");
    print_option_lines(options::Scope::Service, false);
    eprintln!(" ");
    eprintln!("Usage: rstunnel [FILE] | -fd N | -help | -version | -sockets | -options");
    eprintln!("       rstunnel --check [--no-files] FILE");
    eprintln!("       rstunnel --status [PORT | HOST:PORT | SOCKET | FILE]");
}

fn print_version() {
    print_banner();
    eprintln!("Global options:");
    print_option_lines(options::Scope::Global, true);
    eprintln!(" ");
    eprintln!("Service-level options:");
    print_option_lines(options::Scope::Service, true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn stunnel_single_dash_flags_any_case() {
        assert_eq!(normalize(os(&["x", "-VERSION"])), os(&["x", "--version"]));
        assert_eq!(normalize(os(&["x", "-fd", "3"])), os(&["x", "--fd", "3"]));
        assert_eq!(normalize(os(&["x", "a.conf"])), os(&["x", "a.conf"]));
        assert_eq!(
            normalize(os(&["x", "--check", "a.conf"])),
            os(&["x", "--check", "a.conf"])
        );
    }

    #[test]
    fn status_takes_an_optional_argument() {
        let value = |args: &[&str]| {
            command()
                .try_get_matches_from(os(args))
                .map(|m| m.get_one::<String>("status").cloned())
                .ok()
        };
        assert_eq!(value(&["x", "--status"]), Some(Some(String::new())));
        assert_eq!(value(&["x", "--status", "9101"]), Some(Some("9101".into())));
        assert_eq!(value(&["x", "a.conf"]), Some(None));
        assert_eq!(value(&["x", "--status", "1", "a.conf"]), None);
    }

    #[test]
    fn command_is_well_formed() {
        command().debug_assert();
    }
}
