//! What `/status` answers, as JSON (serde): the same figures as `/metrics`, plus the live
//! sessions. Plain data, shared by the endpoint (which fills it, `snapshot.rs`) and by
//! `rstunnel --status` (which reads it back, `client.rs`); a leaf.
//!
//! Field names are part of the interface: add fields, never rename one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusDoc {
    /// rstunnel's version.
    pub version: String,
    /// OpenSSL as compiled against, and as running.
    pub openssl_compiled: String,
    pub openssl_running: String,
    pub pid: u32,
    pub started_unix: u64,
    pub uptime_seconds: f64,
    /// Every service listening and none paused (what `/healthz` answers 200 for).
    pub healthy: bool,
    /// Why not, one entry per service that is not serving.
    pub unhealthy: Vec<String>,
    pub process: Process,
    pub reloads: Reloads,
    pub services: Vec<ServiceStatus>,
    pub certificates: Vec<Certificate>,
    pub sessions: Vec<Session>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Process {
    pub rss_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub threads: u64,
    pub sessions_live: u64,
    /// The process-wide connection cap (from the open-file limit).
    pub connection_cap: u64,
    /// Sessions whose handshake has not completed yet.
    pub unproven: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reloads {
    pub ok: u64,
    pub failed: u64,
    /// Seconds since the epoch of the last good reload; `None` before the first.
    pub last_ok_unix: Option<u64>,
    /// Reloads of TLS contexts because their files changed (`watchCertificates`).
    pub certificates_ok: u64,
    pub certificates_failed: u64,
}

/// One service (a `[section]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub client: bool,
    /// The addresses it listens on, as bound.
    pub accept: Vec<String>,
    /// Its `connect` targets (or the `exec` program), as configured.
    pub connect: Vec<String>,
    /// `listening`, `paused`, `checking` (its far side ended badly; one probe decides),
    /// `starting` (before the first probe), `stopping` (SIGTERM's drain) or `not listening`.
    pub state: String,
    /// Why it is paused or checking.
    pub state_reason: Option<String>,
    /// For how long it has been in that state (paused or checking only).
    pub state_seconds: Option<f64>,
    pub pauses: u64,
    pub checks: u64,
    /// Connections a paused listener holds until it resumes.
    pub held: u64,
    pub sessions_live: u64,
    pub sessions_total: u64,
    /// Bytes written to the TLS side, and to the plain socket, by live and ended sessions.
    pub bytes_to_tls: u64,
    pub bytes_to_socket: u64,
    pub handshakes_ok: u64,
    pub handshakes_resumed: u64,
    /// Failed handshakes by reason (`verify`, `protocol`, `timeout`, `reset`, `other`).
    pub handshakes_failed: BTreeMap<String, u64>,
    /// Failed connects to the far side by target.
    pub connect_failed: BTreeMap<String, u64>,
    /// Refusals by cause (`connection_cap`, `max_connections`, `unproven_per_source`, …).
    pub refused: BTreeMap<String, u64>,
}

/// One loaded certificate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Certificate {
    pub service: String,
    /// `cert` (the service's own), `chain` (the rest of its `cert` file), or `ca` (a
    /// `CAfile` entry).
    pub role: String,
    pub file: String,
    pub subject: String,
    pub not_after_unix: i64,
    /// In hex: tells apart two certificates of one file with the same subject (a CA
    /// bundle holding an old and a renewed CA).
    #[serde(default)]
    pub serial: String,
}

/// One live session, as SIGUSR2 lists it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Session {
    pub id: u64,
    pub service: String,
    pub peer: String,
    pub bytes_to_tls: u64,
    pub bytes_to_socket: u64,
    pub age_seconds: f64,
}
