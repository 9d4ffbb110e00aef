//! Certificate expiry warnings (docs/ARCHITECTURE.md, Certificates; issue 17): at startup
//! every loaded certificate (the service's own, its chain, its `CAfile` entries) within 30,
//! 7 or 1 days of its not-after gets a LOG4 line naming the threshold, the file and the
//! time left, and one already past gets a line saying it expired; the service starts
//! anyway, as stunnel's does. The thresholds as they are crossed hour by hour, without
//! repeats, and renewals starting afresh are the unit tests of `src/certs/expiry.rs`.

mod common;

use std::time::Duration;

use common::daemon::parse_log_line;
use common::tls::tls_to;
use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// A server leaf for `127.0.0.1`/`localhost` from `ca`, expiring `days` from now, written
/// as `<name>.pem` (certificate and key).
fn leaf_expiring(dir: &TestDir, ca: &Ca, cn: &str, days: i64) -> LeafFiles {
    let spec = common::certs::LeafSpec {
        dns: &["localhost"],
        ips: &["127.0.0.1"],
        valid_days: Some(days),
        ..Default::default()
    };
    ca.issue_with(cn, KeyKind::EcP256, &spec).write(dir, cn)
}

/// The one expiry line of the log (LOG4, from the main thread), waited for.
fn expiry_line(t: &Tunnel, pattern: &str) -> String {
    t.wait_for_log(pattern, WAIT);
    let found: Vec<String> = t
        .log_lines()
        .into_iter()
        .filter(|l| l.contains(" expires within ") || l.contains(" expired on "))
        .collect();
    if found.len() != 1 || !found[0].contains(pattern) {
        t.fail(&format!(
            "expected one expiry line with {pattern:?}: {found:#?}"
        ));
    }
    let line = parse_log_line(&found[0]).unwrap_or_else(|| t.fail("not a log line"));
    assert_eq!(line.level, 4, "a warning: {}", found[0]);
    line.text
}

/// A `[srv]` tunnel with `cert` (and `extra` lines) in front of an echo backend; the
/// expiry line with `pattern`, which must start with `expected`; then the tunnel serves
/// (a TLS session through it echoes, checked against `ca` if given).
fn warns_then_serves(
    dir: &TestDir,
    cert: &std::path::Path,
    extra: &str,
    pattern: &str,
    expected: &str,
    ca: Option<&std::path::Path>,
) -> String {
    let echo = Backend::echo();
    let t = Tunnel::start(dir, "server", &server_body(echo.addr(), cert, extra));
    let text = expiry_line(&t, pattern);
    assert!(text.starts_with(expected), "{text}\nexpected {expected}…");
    echoes(&t, ca);
    text
}

/// The tunnel serves: a TLS session through it echoes.
fn echoes(t: &Tunnel, ca: Option<&std::path::Path>) {
    let mut s = tls_to(t.addr("srv"), ca, None);
    lockstep_echo(&mut s, 17, 64 * 1024, "through the tunnel");
    common::tls::tls_finish(&mut s);
}

#[test]
fn a_certificate_expiring_within_a_day_is_warned_at_startup() {
    let dir = TestDir::new("expiry-1day");
    let pki = Pki::new(&dir);
    let leaf = leaf_expiring(&dir, &pki.ca, "soon.name", 1);
    let expected = format!(
        "Service [srv]: certificate O=rstunnel tests, CN=soon.name in {} expires within 1 day: in 24 hours, on ",
        leaf.combined.display()
    );
    warns_then_serves(
        &dir,
        &leaf.combined,
        "",
        "expires within 1 day",
        &expected,
        Some(&pki.ca_file),
    );
}

#[test]
fn an_expired_certificate_is_warned_and_the_service_still_starts() {
    let dir = TestDir::new("expiry-expired");
    let pki = Pki::new(&dir);
    let leaf = leaf_expiring(&dir, &pki.ca, "past.name", -1);
    let expected = format!(
        "Service [srv]: certificate O=rstunnel tests, CN=past.name in {} expired on ",
        leaf.combined.display()
    );
    // It serves (a client that checks the dates would refuse it, as it should).
    let text = warns_then_serves(&dir, &leaf.combined, "", " expired on ", &expected, None);
    assert!(
        text.ends_with(" GMT"),
        "the date as OpenSSL prints it: {text}"
    );
}

#[test]
fn a_ca_file_entry_expiring_within_a_week_names_the_ca_file() {
    let dir = TestDir::new("expiry-cafile");
    let pki = Pki::new(&dir);
    let short = Ca::expiring("short-lived CA", KeyKind::EcP256, 5);
    let ca_file = short.write_cert(&dir, "short-ca.crt");
    let extra = format!("CAfile = {}\n", ca_file.display());
    let expected = format!(
        "Service [srv]: CA certificate O=rstunnel tests, CN=short-lived CA in {} expires within 7 days: in 5 days, on ",
        ca_file.display()
    );
    warns_then_serves(
        &dir,
        &pki.server.combined,
        &extra,
        "expires within 7 days",
        &expected,
        Some(&pki.ca_file),
    );
}
