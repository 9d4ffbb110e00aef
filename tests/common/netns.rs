//! Network namespaces a test creates and owns (`ip netns add`), joined by veth pairs on
//! 192.0.2.0/24 (TEST-NET-1, never routed): made, used from test threads and child
//! processes, and deleted with everything in them on drop. Used by the transparent-proxy
//! tests and the mixed-fleet syslog tests.
//!
//! Owns the namespaces' lifetime only; what runs inside (tunnels, syslog daemons, tcpdump)
//! is started by the caller with the `ip netns exec NS` prefix or [`in_named_netns`].

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use super::faults::{in_named_netns, ip_words};
use super::process::pid_alive;

/// Network namespaces owned by one test, named `rstx<pid>-<tag>-<role>`; deleted on drop
/// (also while panicking), after any process still in them is killed. Everything made
/// inside (veth pairs, addresses, routes, rules, iptables rules) goes with them.
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    pub fn new(tag: &str, roles: &[&str]) -> Namespaces {
        remove_stale_namespaces();
        let mut ns = Namespaces { names: Vec::new() };
        for role in roles {
            let name = format!("rstx{}-{tag}-{role}", std::process::id());
            ip_words(&format!("netns add {name}"));
            ns.names.push(name.clone());
            ip_words(&format!("-n {name} link set lo up"));
        }
        ns
    }

    /// Two namespaces `c` (192.0.2.1) and `s` (192.0.2.2) joined by one veth pair, `vc` in
    /// `c` and `vs` in `s`, on 192.0.2.0/24: a sending host and a receiving host.
    pub fn pair(tag: &str) -> Namespaces {
        let ns = Namespaces::new(tag, &["c", "s"]);
        ns.link(("c", "vc", "192.0.2.1/24"), ("s", "vs", "192.0.2.2/24"));
        ns
    }

    pub fn name(&self, role: &str) -> &str {
        self.names
            .iter()
            .find(|n| n.ends_with(&format!("-{role}")))
            .expect("role")
    }

    /// A veth pair between two namespaces, made directly inside them, with addresses
    /// (`a.b.c.d/len`) and up.
    pub fn link(
        &self,
        (ns_a, if_a, addr_a): (&str, &str, &str),
        (ns_b, if_b, addr_b): (&str, &str, &str),
    ) {
        let (na, nb) = (self.name(ns_a).to_string(), self.name(ns_b).to_string());
        ip_words(&format!(
            "link add {if_a} netns {na} type veth peer name {if_b} netns {nb}"
        ));
        for (n, i, a) in [(&na, if_a, addr_a), (&nb, if_b, addr_b)] {
            ip_words(&format!("-n {n} addr add {a} dev {i}"));
            ip_words(&format!("-n {n} link set {i} up"));
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            kill_namespace_processes(n);
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// The `ip netns exec NS` prefix for [`super::daemon::start_with`] and friends.
pub fn exec_in(ns: &str) -> [&str; 4] {
    ["ip", "netns", "exec", ns]
}

/// A TCP port on `ip` inside namespace `ns` that was free a moment ago (bound, read, closed):
/// for daemons that cannot report the port they bound (rsyslog, syslog-ng). Nothing else
/// runs in a test's own namespace, so it stays free.
pub fn free_port_in(ns: &str, ip: &str) -> u16 {
    let bind = format!("{ip}:0");
    in_named_netns(ns, move || {
        let l = TcpListener::bind(&bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        l.local_addr().unwrap().port()
    })
}

/// Waits until something in `ns` listens on TCP `port` (any address, as `ss -ltn` shows
/// it), without connecting to it: a probe connection would be a session of its own to the
/// listener. Returns false if `timeout` passes first.
pub fn wait_listening(ns: &str, port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let suffix = format!(":{port}");
    loop {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "ss", "-Hltn"])
            .output()
            .expect("running ss");
        let text = String::from_utf8_lossy(&out.stdout);
        if text.lines().any(|l| {
            l.split_whitespace()
                .nth(3)
                .is_some_and(|local| local.ends_with(&suffix))
        }) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILLs the processes left in `ns` (all started by this test), by pid.
fn kill_namespace_processes(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        if pid != std::process::id() as i32 {
            // SAFETY: kill(2) on a pid in a namespace this test created.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Namespaces `rstx<pid>-…` left by a test process that no longer exists (killed before
/// its Drop ran).
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("rstx") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !pid_alive(pid) {
            kill_namespace_processes(&name);
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}
