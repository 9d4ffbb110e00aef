//! What depends on the linked OpenSSL, checked against whichever one this build has (run
//! with the system's OpenSSL 3 by `make test`, with 1.1.1 by `make test-openssl111` and
//! `make test-debian11`, with 4.0 by `make test-openssl40`): `-version` names it, `options =`
//! names that only a newer OpenSSL has are refused with the name and both versions, TLS 1.3
//! settings work, the ENGINE options are refused with the reason (4.0 has no ENGINE).

mod common;

use std::time::Duration;

use common::daemon::rstunnel_bin;
use common::tools::{linked_openssl, run, RunResult};
use common::*;

const T: Duration = Duration::from_secs(10);

fn check(dir: &TestDir, name: &str, extra: &str) -> RunResult {
    let conf = dir.write(
        name,
        format!(
            "foreground = yes\n[srv]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:9\ncert = /nonexistent.pem\n{extra}"
        ),
    );
    run(
        &rstunnel_bin(),
        &["--check", "--no-files", conf.to_str().expect("utf-8 path")],
        T,
    )
}

#[test]
fn version_names_the_same_openssl_built_and_running() {
    let r = run(&rstunnel_bin(), &["-version"], T);
    let field = |prefix: &str| {
        r.stderr
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no `{prefix}` line\n{}", r.describe()))
    };
    let built = field("Compiled with ");
    let running = field("Running  with ");
    // "OpenSSL 1.1.1w" / "OpenSSL 1.1.1w  11 Sep 2023"; "OpenSSL 3.0.19" / "OpenSSL 3.0.19 27 Jan
    // 2026". The patch level may differ (the distribution updated libssl since the build);
    // major and minor cannot (another soname).
    let major_minor = built.rsplit_once('.').map_or(built.as_str(), |(mm, _)| mm);
    assert!(
        built.starts_with("OpenSSL ") && running.starts_with(&format!("{major_minor}.")),
        "built with `{built}` but running with `{running}`\n{}",
        r.describe()
    );
}

#[test]
fn options_of_newer_openssl_are_refused_by_name() {
    let dir = TestDir::new("ossl-newer-options");
    let (major, minor) = linked_openssl();
    for (option, since) in [
        ("ENABLE_KTLS", (3, 0)),
        ("IGNORE_UNEXPECTED_EOF", (3, 0)),
        ("CLEANSE_PLAINTEXT", (3, 0)),
        ("ALLOW_CLIENT_RENEGOTIATION", (3, 0)),
        ("PRIORITIZE_CHACHA", (1, 1)),
        ("NO_TLSv1_3", (1, 1)),
    ] {
        let r = check(&dir, "o.conf", &format!("options = {option}\n"));
        if (major, minor) >= since {
            assert_eq!(
                r.status.code(),
                Some(0),
                "options = {option} must be accepted by OpenSSL {major}.{minor}\n{}",
                r.describe()
            );
        } else {
            let all = format!("{}{}", r.stdout, r.stderr);
            assert_eq!(r.status.code(), Some(1), "{}", r.describe());
            assert!(
                all.contains(&format!("TLS option {option} needs OpenSSL"))
                    && all.contains(&format!("rstunnel is linked with OpenSSL {major}.{minor}")),
                "options = {option} on OpenSSL {major}.{minor} must name the option and both versions\n{}",
                r.describe()
            );
        }
    }
    let r = check(&dir, "bad.conf", "options = NO_SUCH_OPTION\n");
    assert_eq!(r.status.code(), Some(1), "{}", r.describe());
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("Illegal TLS option"),
        "{}",
        r.describe()
    );
}

#[test]
fn tls13_settings_are_accepted() {
    // Every OpenSSL that this project tests (1.1.1, 3.x, 4.0) has TLS 1.3.
    let dir = TestDir::new("ossl-tls13");
    for extra in [
        "sslVersionMax = TLSv1.3\n",
        "sslVersionMin = TLSv1.3\n",
        "sslVersion = TLSv1.3\n",
        "ciphersuites = TLS_CHACHA20_POLY1305_SHA256\n",
    ] {
        let r = check(&dir, "t.conf", extra);
        assert_eq!(r.status.code(), Some(0), "{extra}{}", r.describe());
    }
}

#[test]
fn engine_options_are_refused_with_the_reason() {
    // OpenSSL 4.0 removed the ENGINE API, so there the options cannot exist; before it
    // they are refused as not built yet.
    let dir = TestDir::new("ossl-engine");
    let (major, _) = linked_openssl();
    let global = ["engine", "engineCtrl", "engineDefault"];
    let service = ["engineId", "engineNum", "CAengine"];
    for option in global.iter().chain(&service) {
        let line = format!("{option} = 1\n");
        let (before, inside) = if global.contains(option) {
            (line.as_str(), "")
        } else {
            ("", line.as_str())
        };
        let conf = dir.write(
            "e.conf",
            format!(
                "foreground = yes\n{before}[srv]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:9\n\
                 cert = /nonexistent.pem\n{inside}"
            ),
        );
        let r = run(
            &rstunnel_bin(),
            &["--check", "--no-files", conf.to_str().expect("utf-8 path")],
            T,
        );
        let wanted = if major >= 4 {
            format!("option '{option}' is not available: OpenSSL 4.0 has no ENGINE API")
        } else {
            format!("option '{option}' is not supported yet")
        };
        assert_eq!(r.status.code(), Some(1), "{option}\n{}", r.describe());
        assert!(
            format!("{}{}", r.stdout, r.stderr).contains(&format!("\"{option} = 1\": {wanted}")),
            "{option} on OpenSSL {major}: wanted \"{wanted}\"\n{}",
            r.describe()
        );
    }
    // -help says the same beside each of them.
    let help = run(&rstunnel_bin(), &["-help"], T);
    for option in global.iter().chain(&service) {
        let row = help
            .stderr
            .lines()
            .find(|l| l.split_whitespace().next() == Some(option))
            .unwrap_or_else(|| panic!("-help has no {option} row\n{}", help.describe()));
        let note = if major >= 4 {
            "(not available: OpenSSL 4.0 has no ENGINE API)"
        } else {
            "(not supported yet)"
        };
        assert!(
            row.ends_with(note),
            "-help row `{row}` must end with {note}"
        );
    }
}
