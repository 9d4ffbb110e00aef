//! The README's Prometheus setup, for real: Debian's `prometheus` scrapes a running
//! tunnel's `/metrics` and evaluates the shipped alerting rules
//! (`conf/prometheus/rstunnel-alerts.yml`); the certificate alert goes pending for a
//! certificate that expires within 7 days and the pause alert for a paused service, and
//! neither for the service that is fine. The README shows the same rules file.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::certs::LeafSpec;
use common::process::*;
use common::tools::find_program;
use common::*;

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/conf/prometheus/rstunnel-alerts.yml"
);

/// A private Prometheus: scrapes `target` every second, evaluates the rules every second.
struct Prometheus {
    child: Child,
    api: SocketAddr,
}

impl Prometheus {
    fn start(dir: &TestDir, target: SocketAddr) -> Prometheus {
        let api = lo(free_port());
        let config = dir.write(
            "prometheus.yml",
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {RULES}\n\
                 scrape_configs:\n  - job_name: rstunnel\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        );
        let data = dir.path().join("tsdb");
        let child = Command::new(find_program("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={api}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .expect("start prometheus");
        Prometheus { child, api }
    }

    /// `GET /api/v1/alerts`: every alert that is pending or firing, as (name, labels).
    fn alerts(&self) -> Vec<(String, serde_json::Value)> {
        let (code, body) = common::status::get(self.api, "/api/v1/alerts");
        if code != 200 {
            return Vec::new();
        }
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        doc["data"]["alerts"]
            .as_array()
            .map(|alerts| {
                alerts
                    .iter()
                    .map(|a| {
                        let labels = a["labels"].clone();
                        (
                            labels["alertname"].as_str().unwrap_or("").to_string(),
                            labels,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_shipped_alert_rules_catch_an_expiring_certificate_and_a_paused_service() {
    let dir = TestDir::new("status-prometheus");
    let pki = Pki::new(&dir);
    // [soon] serves a certificate that expires in 3 days; [down] has no far side.
    let soon = pki
        .ca
        .issue_with(
            "soon.example",
            KeyKind::EcP256,
            &LeafSpec {
                dns: &["localhost"],
                valid_days: Some(3),
                ..LeafSpec::default()
            },
        )
        .write(&dir, "soon");
    let echo = Backend::echo();
    let status_port = free_port();
    let body = format!(
        "status = 127.0.0.1:{status_port}\n\
         [soon]\naccept = 127.0.0.1:0\nconnect = {}\ncert = {}\nkey = {}\n\
         [down]\naccept = 127.0.0.1:0\nconnect = {}\ncert = {}\npauseWhenDown = yes\n",
        echo.addr(),
        soon.cert.display(),
        soon.key.display(),
        lo(free_port()),
        pki.server.combined.display(),
    );
    let t = Tunnel::start(&dir, "server", &body);
    t.wait_for_log("Service [down] paused: ", Duration::from_secs(10));
    let prometheus = Prometheus::start(&dir, lo(status_port));

    let deadline = Instant::now() + Duration::from_secs(60);
    let wanted = |alerts: &[(String, serde_json::Value)]| {
        let expiring = alerts.iter().any(|(name, l)| {
            name == "RstunnelCertificateExpiresSoon"
                && l["service"] == "soon"
                && l["role"] == "cert"
                && l["subject"]
                    .as_str()
                    .is_some_and(|s| s.contains("soon.example"))
        });
        let paused = alerts
            .iter()
            .any(|(name, l)| name == "RstunnelServicePaused" && l["service"] == "down");
        expiring && paused
    };
    let mut alerts = prometheus.alerts();
    while !wanted(&alerts) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        alerts = prometheus.alerts();
    }
    let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    assert!(
        wanted(&alerts),
        "alerts: {alerts:?}\nprometheus log:\n{log}"
    );
    // Nothing is said of what is fine: [soon] is not paused, and the CA and the server
    // certificate of [down] are valid for longer than a week.
    for (name, labels) in &alerts {
        match name.as_str() {
            "RstunnelServicePaused" => assert_eq!(labels["service"], "down", "{labels}"),
            "RstunnelCertificateExpiresSoon" => assert_eq!(labels["service"], "soon", "{labels}"),
            other => panic!("unexpected alert {other}: {labels}"),
        }
    }
    drop(t);
}

/// The README shows the rules file as it is shipped.
#[test]
fn the_readme_shows_the_shipped_rules() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let rules = std::fs::read_to_string(RULES).unwrap();
    let body: String = rules
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        readme.contains(&body),
        "README.md must show {RULES} from `groups:` on"
    );
}
