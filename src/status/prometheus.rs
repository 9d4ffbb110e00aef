//! `/metrics`: a `StatusDoc` in the Prometheus text exposition format, version 0.0.4
//! (every family with its `# HELP` and `# TYPE`, counters named `…_total`, base units:
//! bytes and seconds; label values escaped). Written here rather than through a metrics
//! crate: the figures already exist as plain numbers in the document that `/status` serves,
//! and the format is the few rules below (README, Dependencies, says more). The tests
//! check it with `promtool check metrics`.
//!
//! A leaf over `doc`: no I/O, no state.

use std::fmt::Write;

use super::doc::StatusDoc;

/// The `Content-Type` of this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition of `doc`.
pub fn render(doc: &StatusDoc) -> String {
    let mut out = Exposition::default();
    let services = &doc.services;
    out.family(
        "rstunnel_build_info",
        "gauge",
        "rstunnel's version and the OpenSSL it was compiled against and runs with (always 1)",
        [(
            vec![
                ("version", doc.version.as_str()),
                ("openssl_compiled", doc.openssl_compiled.as_str()),
                ("openssl_running", doc.openssl_running.as_str()),
            ],
            Value::from(1u64),
        )],
    );
    let per_service = |f: &dyn Fn(&super::doc::ServiceStatus) -> Value| {
        services
            .iter()
            .map(|s| (vec![("service", s.name.as_str())], f(s)))
            .collect::<Vec<_>>()
    };
    out.family(
        "rstunnel_service_listening",
        "gauge",
        "1 while the service accepts connections (not paused, not starting)",
        per_service(&|s| {
            Value::from(u64::from(matches!(
                s.state.as_str(),
                "listening" | "checking"
            )))
        }),
    );
    out.family(
        "rstunnel_service_paused",
        "gauge",
        "1 while the service refuses connections because its far side is down (pauseWhenDown)",
        per_service(&|s| Value::from(u64::from(s.state == "paused"))),
    );
    out.family(
        "rstunnel_service_pauses_total",
        "counter",
        "Pauses since the process started",
        per_service(&|s| Value::from(s.pauses)),
    );
    out.family(
        "rstunnel_service_checks_total",
        "counter",
        "Probes after a far side ended badly that found it answering",
        per_service(&|s| Value::from(s.checks)),
    );
    out.family(
        "rstunnel_held_connections",
        "gauge",
        "Connections a paused listener holds until the service resumes",
        per_service(&|s| Value::from(s.held)),
    );
    out.family(
        "rstunnel_sessions_active",
        "gauge",
        "Live sessions",
        per_service(&|s| Value::from(s.sessions_live)),
    );
    out.family(
        "rstunnel_sessions_total",
        "counter",
        "Sessions admitted",
        per_service(&|s| Value::from(s.sessions_total)),
    );
    out.family(
        "rstunnel_relayed_bytes_total",
        "counter",
        "Bytes relayed by live and ended sessions: to_tls written to the TLS side, to_socket to the plain side",
        services.iter().flat_map(|s| {
            [
                (vec![("service", s.name.as_str()), ("direction", "to_tls")], Value::from(s.bytes_to_tls)),
                (vec![("service", s.name.as_str()), ("direction", "to_socket")], Value::from(s.bytes_to_socket)),
            ]
        }),
    );
    out.family(
        "rstunnel_handshakes_total",
        "counter",
        "TLS handshakes completed",
        per_service(&|s| Value::from(s.handshakes_ok)),
    );
    out.family(
        "rstunnel_handshakes_resumed_total",
        "counter",
        "TLS handshakes completed that resumed a session",
        per_service(&|s| Value::from(s.handshakes_resumed)),
    );
    out.family(
        "rstunnel_handshake_failures_total",
        "counter",
        "TLS handshakes failed, by reason: verify (a certificate refused), protocol, timeout, reset, other",
        services.iter().flat_map(|s| {
            s.handshakes_failed.iter().map(|(reason, n)| {
                (vec![("service", s.name.as_str()), ("reason", reason.as_str())], Value::from(*n))
            })
        }),
    );
    out.family(
        "rstunnel_connect_failures_total",
        "counter",
        "Failed connects to the far side, by target",
        services.iter().flat_map(|s| {
            s.connect_failed.iter().map(|(target, n)| {
                (
                    vec![("service", s.name.as_str()), ("target", target.as_str())],
                    Value::from(*n),
                )
            })
        }),
    );
    out.family(
        "rstunnel_refused_connections_total",
        "counter",
        "Connections refused or dropped before they were served, by cause",
        services.iter().flat_map(|s| {
            s.refused.iter().map(|(cause, n)| {
                (
                    vec![("service", s.name.as_str()), ("cause", cause.as_str())],
                    Value::from(*n),
                )
            })
        }),
    );
    out.family(
        "rstunnel_certificate_not_after_timestamp_seconds",
        "gauge",
        "When a loaded certificate expires, in seconds since the epoch (role: cert, chain or ca; serial in hex)",
        doc.certificates.iter().map(|c| {
            (
                vec![
                    ("service", c.service.as_str()),
                    ("role", c.role.as_str()),
                    ("file", c.file.as_str()),
                    ("subject", c.subject.as_str()),
                    ("serial", c.serial.as_str()),
                ],
                Value::from(c.not_after_unix),
            )
        }),
    );
    let p = &doc.process;
    let r = &doc.reloads;
    let process: [(&str, &str, &str, Value); 8] = [
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes",
            Value::from(p.rss_bytes),
        ),
        (
            "process_open_fds",
            "gauge",
            "Open file descriptors",
            Value::from(p.open_fds),
        ),
        (
            "process_max_fds",
            "gauge",
            "The open-file limit",
            Value::from(p.max_fds),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "When the process started, in seconds since the epoch",
            Value::from(doc.started_unix),
        ),
        (
            "rstunnel_threads",
            "gauge",
            "Threads of the process",
            Value::from(p.threads),
        ),
        (
            "rstunnel_uptime_seconds",
            "gauge",
            "Seconds since the process started",
            Value::from(doc.uptime_seconds),
        ),
        (
            "rstunnel_connection_cap",
            "gauge",
            "Concurrent sessions the process takes (from the open-file limit)",
            Value::from(p.connection_cap),
        ),
        (
            "rstunnel_unproven_sessions",
            "gauge",
            "Sessions whose TLS handshake has not completed yet",
            Value::from(p.unproven),
        ),
    ];
    for (name, kind, help, value) in process {
        out.family(name, kind, help, [(Vec::new(), value)]);
    }
    out.family(
        "rstunnel_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP), by result",
        [
            (vec![("result", "ok")], Value::from(r.ok)),
            (vec![("result", "failed")], Value::from(r.failed)),
        ],
    );
    out.family(
        "rstunnel_certificate_reloads_total",
        "counter",
        "Reloads of TLS contexts because their files changed on disk (watchCertificates), by result",
        [
            (vec![("result", "ok")], Value::from(r.certificates_ok)),
            (vec![("result", "failed")], Value::from(r.certificates_failed)),
        ],
    );
    if let Some(last) = r.last_ok_unix {
        out.family(
            "rstunnel_last_reload_success_timestamp_seconds",
            "gauge",
            "When the configuration was last reloaded successfully, in seconds since the epoch",
            [(Vec::new(), Value::from(last))],
        );
    }
    out.text
}

#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// One family: its HELP and TYPE lines, then a sample per label set. A family without
    /// samples is left out.
    fn family<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, Value)>,
    ) {
        let mut samples = samples.into_iter().peekable();
        if samples.peek().is_none() {
            return;
        }
        let _ = writeln!(self.text, "# HELP {name} {}", escape(help, false));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.text.push_str(name);
            if !labels.is_empty() {
                self.text.push('{');
                for (i, (label, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.text.push(',');
                    }
                    let _ = write!(self.text, "{label}=\"{}\"", escape(v, true));
                }
                self.text.push('}');
            }
            let _ = writeln!(self.text, " {value}");
        }
    }
}

/// The format's escapes: `\\` and `\n` everywhere, `\"` in label values.
fn escape(text: &str, quoted: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quoted => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// A sample's value: counts exactly as integers (a byte counter passes 2^53, where an f64
/// stops being exact, after about 9 PB), measurements as floats.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(i128),
    Float(f64),
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Int(i128::from(n))
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(i128::from(n))
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Value {
        Value::Float(x)
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::doc::{Certificate, ServiceStatus};

    /// Counters past 2^53 are printed exactly; two certificates of one file with the same
    /// subject are two series (their serials differ), not a duplicate.
    #[test]
    fn big_counters_are_exact_and_certificates_distinct() {
        let cert = |serial: &str, not_after| Certificate {
            service: "s".into(),
            role: "ca".into(),
            file: "/etc/ssl/bundle.pem".into(),
            subject: "CN=Test CA".into(),
            not_after_unix: not_after,
            serial: serial.into(),
        };
        let doc = StatusDoc {
            services: vec![ServiceStatus {
                name: "s".into(),
                bytes_to_tls: u64::MAX - 1,
                ..Default::default()
            }],
            certificates: vec![cert("01", 1_800_000_000), cert("02", 1_900_000_000)],
            ..Default::default()
        };
        let text = render(&doc);
        assert!(
            text.contains(&format!("direction=\"to_tls\"}} {}\n", u64::MAX - 1)),
            "{text}"
        );
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("rstunnel_certificate_not_after_timestamp_seconds{"))
            .map(|l| l.rsplit_once(' ').unwrap().0)
            .collect();
        assert_eq!(series.len(), 2);
        assert_ne!(series[0], series[1]);
    }

    /// Every sample line follows its family's HELP and TYPE; label values are escaped.
    #[test]
    fn families_have_help_and_type_and_escaped_labels() {
        let doc = StatusDoc {
            services: vec![ServiceStatus {
                name: "sys\"log".into(),
                state: "paused".into(),
                sessions_total: 7,
                bytes_to_tls: 1234,
                handshakes_failed: [("verify".to_string(), 2)].into(),
                ..Default::default()
            }],
            certificates: vec![Certificate {
                subject: "CN=a\\b\nc".into(),
                not_after_unix: 1_900_000_000,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&doc);
        assert!(
            text.contains("rstunnel_sessions_total{service=\"sys\\\"log\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("rstunnel_service_paused{service=\"sys\\\"log\"} 1\n"));
        assert!(text.contains(
            "rstunnel_relayed_bytes_total{service=\"sys\\\"log\",direction=\"to_tls\"} 1234\n"
        ));
        assert!(text.contains(
            "rstunnel_handshake_failures_total{service=\"sys\\\"log\",reason=\"verify\"} 2\n"
        ));
        assert!(
            text.contains("subject=\"CN=a\\\\b\\nc\",serial=\"\"} 1900000000\n"),
            "{text}"
        );
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(typed.contains(name), "{name} sampled before its TYPE");
            }
        }
        // No connect failures were counted: that family is left out, not empty.
        assert!(!text.contains("rstunnel_connect_failures_total"));
        assert!(!text.contains("rstunnel_last_reload_success_timestamp_seconds"));
    }
}
