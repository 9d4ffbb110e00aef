//! The `openssl` command-line tool's TLS peers as the interop tests drive them:
//! `s_client` run to completion with a bounded run time, and `s_server` kept running as a
//! [`Tunnel`] (killed on drop, its output in failure messages). Named `openssl_cli`, not
//! `openssl`, so that `use common::*` does not shadow the `openssl` crate.

use std::ffi::OsStr;
use std::process::Command;
use std::time::Duration;

use super::daemon::Tunnel;
use super::tools::{openssl, run_with_timeout, RunResult};
use super::TestDir;

/// How long `s_server` may take to print its `ACCEPT` line.
const START: Duration = Duration::from_secs(10);

/// Runs `openssl s_client -connect 127.0.0.1:PORT ARGS…` with `stdin` as its input, for at
/// most `timeout`.
pub fn s_client<A: AsRef<OsStr>>(
    port: u16,
    args: &[A],
    stdin: &[u8],
    timeout: Duration,
) -> RunResult {
    let mut cmd = Command::new(openssl());
    cmd.arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .args(args);
    run_with_timeout(cmd, stdin, timeout)
}

/// Starts `openssl s_server -accept 127.0.0.1:0 ARGS…` (its command line kept as
/// `LABEL.args` in `dir`, the "config" failure messages show) and returns it with the port
/// it printed in its `ACCEPT` line.
pub fn s_server(dir: &TestDir, label: &str, args: &[&str]) -> (Tunnel, u16) {
    let mut all = vec!["s_server", "-accept", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let argfile = dir.write(
        &format!("{label}.args"),
        format!("openssl {}\n", all.join(" ")),
    );
    let os_args: Vec<&OsStr> = all.iter().map(|a| a.as_ref()).collect();
    let t = Tunnel::spawn(&openssl(), &os_args, label, argfile);
    let accept = t.wait_for_log("ACCEPT ", START);
    let port = accept
        .rsplit_once(':')
        .and_then(|(_, port)| port.trim().parse::<u16>().ok())
        .unwrap_or_else(|| t.fail(&format!("no port in {accept:?}")));
    (t, port)
}
