//! The status endpoint (`status = ADDRESS`) as the tests read it: a GET with real curl, the
//! Prometheus text parsed back into samples, `promtool check metrics` on a scrape, the
//! `/status` JSON as the crate's own `StatusDoc`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rstunnel::status::doc::StatusDoc;

use super::tools::{find_program, run_with_timeout};

/// `GET path` with curl: the HTTP status code and the body.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    curl(&[&format!("http://{addr}{path}")])
}

/// `GET path` over a Unix socket.
pub fn get_unix(socket: &Path, path: &str) -> (u16, String) {
    curl(&[
        "--unix-socket",
        &socket.display().to_string(),
        &format!("http://localhost{path}"),
    ])
}

fn curl(args: &[&str]) -> (u16, String) {
    let mut cmd = Command::new(find_program("curl"));
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args);
    let r = run_with_timeout(cmd, b"", Duration::from_secs(15));
    let out = r.stdout.clone();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
    let code = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl {args:?}: no status code in {out:?}: {}", r.describe()));
    (code, body.to_string())
}

/// The scrape of `/metrics`, checked for a 200.
pub fn scrape(addr: SocketAddr) -> Metrics {
    let (code, body) = get(addr, "/metrics");
    assert_eq!(code, 200, "/metrics answered {code}: {body}");
    Metrics(body)
}

/// `/status`, parsed.
pub fn status(addr: SocketAddr) -> StatusDoc {
    let (code, body) = get(addr, "/status");
    assert_eq!(code, 200, "/status answered {code}: {body}");
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/status is not a StatusDoc: {e}\n{body}"))
}

/// One scrape's text.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the sample `name` whose labels include every `labels` pair; `None` if
    /// there is none.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (sample, label_text) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.strip_suffix('}')?),
                    None => (series, ""),
                };
                let matches = sample == name
                    && labels
                        .iter()
                        .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
                matches.then(|| value.parse().ok()).flatten()
            })
    }

    /// [`Metrics::get`], 0 when absent (a family with no samples is left out).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// `promtool check metrics` on this scrape: the format and Prometheus' naming rules.
    pub fn assert_promtool_clean(&self) {
        let mut cmd = Command::new(find_program("promtool"));
        cmd.args(["check", "metrics"]);
        let r = run_with_timeout(cmd, self.0.as_bytes(), Duration::from_secs(30));
        assert!(
            r.status.success() && r.stdout.trim().is_empty() && r.stderr.trim().is_empty(),
            "promtool check metrics: {}\n{}",
            r.describe(),
            self.0
        );
    }
}

/// Scrapes `addr` until `ok` holds for a scrape (up to `timeout`); returns that scrape, or
/// panics with the last one.
pub fn scrape_until(addr: SocketAddr, timeout: Duration, ok: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + timeout;
    loop {
        let m = scrape(addr);
        if ok(&m) {
            return m;
        }
        if Instant::now() > deadline {
            panic!("the metrics never reached the expected values:\n{}", m.0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
