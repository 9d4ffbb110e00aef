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
            1.0,
        )],
    );
    let per_service = |f: &dyn Fn(&super::doc::ServiceStatus) -> f64| {
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
            f64::from(u8::from(matches!(
                s.state.as_str(),
                "listening" | "checking"
            )))
        }),
    );
    out.family(
        "rstunnel_service_paused",
        "gauge",
        "1 while the service refuses connections because its far side is down (pauseWhenDown)",
        per_service(&|s| f64::from(u8::from(s.state == "paused"))),
    );
    out.family(
        "rstunnel_service_pauses_total",
        "counter",
        "Pauses since the process started",
        per_service(&|s| s.pauses as f64),
    );
    out.family(
        "rstunnel_service_checks_total",
        "counter",
        "Probes after a far side ended badly that found it answering",
        per_service(&|s| s.checks as f64),
    );
    out.family(
        "rstunnel_held_connections",
        "gauge",
        "Connections a paused listener holds until the service resumes",
        per_service(&|s| s.held as f64),
    );
    out.family(
        "rstunnel_sessions_active",
        "gauge",
        "Live sessions",
        per_service(&|s| s.sessions_live as f64),
    );
    out.family(
        "rstunnel_sessions_total",
        "counter",
        "Sessions admitted",
        per_service(&|s| s.sessions_total as f64),
    );
    out.family(
        "rstunnel_relayed_bytes_total",
        "counter",
        "Bytes relayed by live and ended sessions: to_tls written to the TLS side, to_socket to the plain side",
        services.iter().flat_map(|s| {
            [
                (vec![("service", s.name.as_str()), ("direction", "to_tls")], s.bytes_to_tls as f64),
                (vec![("service", s.name.as_str()), ("direction", "to_socket")], s.bytes_to_socket as f64),
            ]
        }),
    );
    out.family(
        "rstunnel_handshakes_total",
        "counter",
        "TLS handshakes completed",
        per_service(&|s| s.handshakes_ok as f64),
    );
    out.family(
        "rstunnel_handshakes_resumed_total",
        "counter",
        "TLS handshakes completed that resumed a session",
        per_service(&|s| s.handshakes_resumed as f64),
    );
    out.family(
        "rstunnel_handshake_failures_total",
        "counter",
        "TLS handshakes failed, by reason: verify (a certificate refused), protocol, timeout, reset, other",
        services.iter().flat_map(|s| {
            s.handshakes_failed.iter().map(|(reason, n)| {
                (vec![("service", s.name.as_str()), ("reason", reason.as_str())], *n as f64)
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
                    *n as f64,
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
                    *n as f64,
                )
            })
        }),
    );
    out.family(
        "rstunnel_certificate_not_after_timestamp_seconds",
        "gauge",
        "When a loaded certificate expires, in seconds since the epoch (role: cert, chain or ca)",
        doc.certificates.iter().map(|c| {
            (
                vec![
                    ("service", c.service.as_str()),
                    ("role", c.role.as_str()),
                    ("file", c.file.as_str()),
                    ("subject", c.subject.as_str()),
                ],
                c.not_after_unix as f64,
            )
        }),
    );
    let p = &doc.process;
    let r = &doc.reloads;
    let process: [(&str, &str, &str, f64); 8] = [
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes",
            p.rss_bytes as f64,
        ),
        (
            "process_open_fds",
            "gauge",
            "Open file descriptors",
            p.open_fds as f64,
        ),
        (
            "process_max_fds",
            "gauge",
            "The open-file limit",
            p.max_fds as f64,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "When the process started, in seconds since the epoch",
            doc.started_unix as f64,
        ),
        (
            "rstunnel_threads",
            "gauge",
            "Threads of the process",
            p.threads as f64,
        ),
        (
            "rstunnel_uptime_seconds",
            "gauge",
            "Seconds since the process started",
            doc.uptime_seconds,
        ),
        (
            "rstunnel_connection_cap",
            "gauge",
            "Concurrent sessions the process takes (from the open-file limit)",
            p.connection_cap as f64,
        ),
        (
            "rstunnel_unproven_sessions",
            "gauge",
            "Sessions whose TLS handshake has not completed yet",
            p.unproven as f64,
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
            (vec![("result", "ok")], r.ok as f64),
            (vec![("result", "failed")], r.failed as f64),
        ],
    );
    out.family(
        "rstunnel_certificate_reloads_total",
        "counter",
        "Reloads of TLS contexts because their files changed on disk (watchCertificates), by result",
        [
            (vec![("result", "ok")], r.certificates_ok as f64),
            (vec![("result", "failed")], r.certificates_failed as f64),
        ],
    );
    if let Some(last) = r.last_ok_unix {
        out.family(
            "rstunnel_last_reload_success_timestamp_seconds",
            "gauge",
            "When the configuration was last reloaded successfully, in seconds since the epoch",
            [(Vec::new(), last as f64)],
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
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::doc::{Certificate, ServiceStatus};

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
            text.contains("subject=\"CN=a\\\\b\\nc\"} 1900000000\n"),
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
