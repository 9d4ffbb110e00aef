//! `sandbox = yes` (the default; src/sandbox.rs, the man page): after startup the process
//! reaches only the files its configuration names, through the kernel's Landlock.
//!
//! * A reload naming a certificate outside the directories allowed at startup fails with
//!   a line that names it, and the old certificate keeps serving (a real handshake checks
//!   which one); a certificate inside them is taken.
//! * An `exec` program runs, but inside the ruleset: reading a file outside it fails with
//!   EACCES ("Permission denied"), and executing a program the configuration does not name
//!   is refused; a file of the configuration's directory stays readable. With
//!   `sandbox = no` the same program reads the file and runs the other program.
//! * With `pty = yes` the program still gets its terminal.
//! * The `output` log is created again after a rotation (SIGUSR1) and the pid file is
//!   removed at exit, both in directories of their own outside the configuration's.
//! * A reload adding `pty = yes`, or an `include` directory outside the sandbox, is
//!   refused with a line naming the device or directory; the old configuration serves.
//! * A file the sandbox allows and that is replaced by rename is read again (allowed
//!   through its directory, as the C library's lookup files in /etc are).
//! * `exec = sh` (found on PATH) and a `#!/usr/bin/env sh` script run, and a reload of
//!   the configuration that started is taken.
//! * With `chroot` (as root): a certificate renewed in the jail's copy of the startup
//!   directory loads at a reload, one elsewhere in the jail is refused by name, and an
//!   `exec` program missing from the jail is a startup warning.
//!
//! Syslog under the sandbox is covered by tests/log_sinks.rs (the default is on there).
//! Each test prints SKIPPED and passes only when the kernel has no Landlock.

mod common;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use common::process::*;
use common::tls::tls_to;
use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// Whether the running kernel enforces Landlock; prints why not.
fn landlock_or_skip(test: &str) -> bool {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only
    // returns the ABI version.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if abi < 1 {
        skipped(&format!(
            "{test}: this kernel has no Landlock ({})",
            std::io::Error::last_os_error()
        ));
        return false;
    }
    true
}

/// Waits until `pattern` has been logged `n` times in all.
fn wait_count(t: &Tunnel, pattern: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    while t.log_lines().iter().filter(|l| l.contains(pattern)).count() < n {
        if Instant::now() >= deadline {
            t.fail(&format!(
                "`{pattern}` not logged {n} time(s) within {WAIT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Rewrites the tunnel's configuration to the harness' global lines plus `body`, sends
/// SIGHUP and waits for the outcome; returns whether it was `Configuration reloaded`.
fn reload(t: &Tunnel, header: &str, body: &str) -> bool {
    reload_after(t, || write_atomic(&t.conf, &format!("{header}{body}\n")))
}

/// `rewrite`s the configuration, sends SIGHUP and returns whether the reload was taken.
fn reload_after(t: &Tunnel, rewrite: impl FnOnce()) -> bool {
    let count = |p: &str| t.log_lines().iter().filter(|l| l.contains(p)).count();
    let (ok, failed) = (
        count("Configuration reloaded"),
        count("Failed to reload the configuration file"),
    );
    rewrite();
    t.signal(libc::SIGHUP);
    let deadline = Instant::now() + WAIT;
    loop {
        if count("Configuration reloaded") > ok {
            return true;
        }
        if count("Failed to reload the configuration file") > failed {
            return false;
        }
        if Instant::now() >= deadline {
            t.fail("no reload outcome within 10 s of SIGHUP");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The CN of the certificate a new TLS session to `port` is served, checked against `ca`,
/// after one echo round trip.
fn served_cn(t: &Tunnel, port: u16, ca: &Path) -> String {
    let mut s = tls_connect(lo(port), ca)
        .unwrap_or_else(|e| t.fail(&format!("TLS session to port {port}: {e:?}")));
    echo_check(&mut s, b"which certificate?\n").unwrap_or_else(|e| t.fail(&e));
    let cn = peer_cn(&s);
    tls_close(s);
    cn
}

#[test]
fn a_reload_naming_a_certificate_outside_the_sandbox_fails_and_the_old_one_serves() {
    let Some((dir, pki)) = setup("a_reload_naming_a_certificate_outside_the_sandbox") else {
        return;
    };
    let elsewhere = TestDir::new("sandbox-reload-elsewhere");
    let inside = pki
        .ca
        .issue("inside.right.name", certs::SERVER_NAMES, KeyKind::EcP256)
        .write(&dir, "inside");
    let outside = pki
        .ca
        .issue("outside.right.name", certs::SERVER_NAMES, KeyKind::EcP256)
        .write(&elsewhere, "outside");
    let echo = Backend::echo();
    let port = free_port();
    let body = |cert: &Path| {
        format!(
            "[srv]\naccept = 127.0.0.1:{port}\nconnect = {}\ncert = {}\n",
            echo.addr(),
            cert.display()
        )
    };
    let first = body(&pki.server.combined);
    let t = Tunnel::start(&dir, "server", &first);
    let written = std::fs::read_to_string(&t.conf).unwrap();
    let header = written[..written.find(&first).unwrap()].to_string();
    t.wait_for_log("Sandbox: Landlock ABI", WAIT);
    let status = std::fs::read_to_string(format!("/proc/{}/status", tunnel_pid(&t))).unwrap();
    assert!(
        status.lines().any(|l| l == "NoNewPrivs:\t1"),
        "no_new_privs is not set:\n{status}"
    );
    assert_eq!(served_cn(&t, port, &pki.ca_file), "right.name");

    // A directory the startup did not allow: refused by name, nothing changes.
    assert!(
        !reload(&t, &header, &body(&outside.combined)),
        "a certificate outside the sandbox was loaded"
    );
    let why = t.wait_for_log("outside what the sandbox allowed", WAIT);
    assert!(
        why.contains(&outside.combined.display().to_string()),
        "{why}"
    );
    assert_eq!(served_cn(&t, port, &pki.ca_file), "right.name");

    // The same check is the kernel's, not only rstunnel's: the file itself cannot be
    // opened by the running process either (its `exec` children are in the same domain),
    // shown in a_program_runs_inside_the_sandbox. A new file in an allowed directory is
    // taken, so a renewed certificate needs no restart.
    assert!(
        reload(&t, &header, &body(&inside.combined)),
        "a certificate in the configuration's directory was refused"
    );
    assert_eq!(served_cn(&t, port, &pki.ca_file), "inside.right.name");
}

/// The harness' directory and certificates for `test`, or `None` (printed) without Landlock.
fn setup(test: &str) -> Option<(TestDir, Pki)> {
    if !landlock_or_skip(test) {
        return None;
    }
    let dir = TestDir::new(test);
    let pki = Pki::new(&dir);
    Some((dir, pki))
}

/// `global` lines, then a server section `[srv]` running `sh SCRIPT` with `extra` lines.
fn exec_body(global: &str, pki: &Pki, script: &Path, extra: &str) -> String {
    format!(
        "{global}[srv]\naccept = 127.0.0.1:0\ncert = {}\nexec = /bin/sh\nexecArgs = sh {}\n{extra}",
        pki.server.combined.display(),
        script.display()
    )
}

/// Output of one session with a server tunnel whose `exec` program writes and exits.
fn program_output(t: &Tunnel, section: &str, ca: &Path) -> String {
    let mut s = tls_to(t.addr(section), Some(ca), None);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_program_runs_inside_the_sandbox() {
    let Some((dir, pki)) = setup("a_program_runs_inside_the_sandbox") else {
        return;
    };
    let elsewhere = TestDir::new("sandbox-exec-elsewhere");
    let secret = elsewhere.write("secret.txt", "the secret\n");
    let near = dir.write("near.txt", "near file\n");
    let cat = std::fs::canonicalize("/bin/cat").unwrap();
    // Only shell built-ins, except for the one `cat`, which the configuration does not
    // name as a program.
    let script = dir.write(
        "probe.sh",
        format!(
            "if read line < {secret}; then echo \"read: $line\"; else echo 'read: denied'; fi\n\
             if read line < {near}; then echo \"near: $line\"; else echo 'near: denied'; fi\n\
             {cat} {secret} >/dev/null 2>&1; echo \"cat: $?\"\n",
            secret = secret.display(),
            near = near.display(),
            cat = cat.display(),
        ),
    );
    let t = Tunnel::start(&dir, "sandboxed", &exec_body("", &pki, &script, ""));
    // The admin is told at startup, where an exec program that needs more would start
    // failing (the one way a stunnel.conf can stop working here).
    t.wait_for_log(
        "Service [srv]: exec /bin/sh runs inside the sandbox: it can run no other program",
        WAIT,
    );
    let out = program_output(&t, "srv", &pki.ca_file);
    assert!(
        out.contains("read: denied"),
        "a file outside was read: {out:?}"
    );
    assert!(out.contains("near: near file"), "{out:?}");
    // 126: found but not executable (EACCES from execve), as the shell reports it.
    assert!(
        out.contains("cat: 126"),
        "a program not in the configuration ran: {out:?}"
    );
    // The shell's own message for the refused open is EACCES's text.
    let denied = t.wait_for_log(&format!("{}: Permission denied", secret.display()), WAIT);
    assert!(!denied.contains("No such file"), "{denied}");
    drop(t);

    let t = Tunnel::start(
        &dir,
        "unsandboxed",
        &exec_body("sandbox = no\n", &pki, &script, ""),
    );
    t.wait_for_log("Sandbox: off", WAIT);
    let out = program_output(&t, "srv", &pki.ca_file);
    assert!(out.contains("read: the secret"), "sandbox = no: {out:?}");
    assert!(out.contains("cat: 0"), "sandbox = no: {out:?}");
}

#[test]
fn a_program_with_a_pty_gets_its_terminal() {
    let Some((dir, pki)) = setup("a_program_with_a_pty_gets_its_terminal") else {
        return;
    };
    let script = dir.write(
        "tty.sh",
        "if [ -t 0 ]; then echo 'stdin: terminal'; else echo 'stdin: none'; fi\n",
    );
    let t = Tunnel::start(&dir, "server", &exec_body("", &pki, &script, "pty = yes\n"));
    t.wait_for_log("Sandbox: Landlock ABI", WAIT);
    let out = program_output(&t, "srv", &pki.ca_file);
    assert!(out.contains("stdin: terminal"), "{out:?}");
}

#[test]
fn the_log_is_reopened_and_the_pid_file_removed_inside_the_sandbox() {
    let Some((dir, pki)) = setup("the_log_is_reopened_and_the_pid_file_removed_inside_the_sandbox")
    else {
        return;
    };
    let logs = TestDir::new("sandbox-log-output");
    let run = TestDir::new("sandbox-log-run");
    let (log, pid) = (logs.join("rstunnel.log"), run.join("rstunnel.pid"));
    let echo = Backend::echo();
    let mut t = Tunnel::start(
        &dir,
        "server",
        &format!(
            "output = {}\npid = {}\n{}",
            log.display(),
            pid.display(),
            server_body(echo.addr(), &pki.server.combined, "")
        ),
    );
    t.wait_for_log("Sandbox: Landlock ABI", WAIT);
    assert!(pid.exists(), "no pid file");
    tls_echo(t.addr("srv"), &pki.ca_file, b"before\n").unwrap_or_else(|e| t.fail(&e));
    std::fs::rename(&log, logs.join("rstunnel.log.1")).unwrap();
    t.signal(libc::SIGUSR1);
    wait_count(&t, "Log file reopened", 1);
    tls_echo(t.addr("srv"), &pki.ca_file, b"after\n").unwrap_or_else(|e| t.fail(&e));
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&log).is_ok_and(|s| s.contains("Connection closed")) {
        if Instant::now() >= deadline {
            t.fail(&format!(
                "{} was not written after the reopen",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = t.stop();
    assert!(status.success(), "{status:?}");
    assert!(!pid.exists(), "the pid file was left behind");
}

/// The harness' global lines of `t`'s configuration, which precede `body` in the file.
fn header_of(t: &Tunnel, body: &str) -> String {
    let written = std::fs::read_to_string(&t.conf).unwrap();
    written[..written.find(body).unwrap()].to_string()
}

/// A reload needing more than the startup allowed is refused by name, and the old
/// configuration serves on: `pty = yes` (the pty devices), and an `include` directory
/// the process cannot even read (named, not a bare "Permission denied").
#[test]
fn a_reload_adding_a_pty_or_an_include_outside_is_refused() {
    let Some((dir, pki)) = setup("a_reload_adding_a_pty_or_an_include_outside") else {
        return;
    };
    let script = dir.write(
        "tty.sh",
        "if [ -t 0 ]; then echo 'stdin: terminal'; else echo 'stdin: none'; fi\n",
    );
    let first = exec_body("", &pki, &script, "");
    let t = Tunnel::start(&dir, "server", &first);
    let header = header_of(&t, &first);
    assert!(program_output(&t, "srv", &pki.ca_file).contains("stdin: none"));

    assert!(
        !reload(&t, &header, &exec_body("", &pki, &script, "pty = yes\n")),
        "a reload adding pty = yes was taken"
    );
    let why = t.wait_for_log("outside what the sandbox allowed", WAIT);
    assert!(why.contains("pty device /dev/ptmx"), "{why}");
    let out = program_output(&t, "srv", &pki.ca_file);
    assert!(
        out.contains("stdin: none"),
        "the old configuration: {out:?}"
    );

    let elsewhere = TestDir::new("sandbox-include-elsewhere");
    elsewhere.write("more.conf", "debug = 7\n");
    let included = exec_body(
        &format!("include = {}\n", elsewhere.path().display()),
        &pki,
        &script,
        "",
    );
    assert!(
        !reload(&t, &header, &included),
        "an include directory outside the sandbox was read"
    );
    let lines = t.wait_for_logs("outside what the sandbox allowed", 2, WAIT);
    assert!(
        lines[1].contains(&format!(
            "include directory {} is outside",
            elsewhere.path().display()
        )),
        "{lines:?}"
    );
    assert!(program_output(&t, "srv", &pki.ca_file).contains("stdin: none"));
}

/// A file the sandbox allows is allowed through its directory: replaced by rename (as an
/// editor, `sed -i` or a package upgrade does, and as /etc/passwd and resolv.conf are),
/// the new file is read by the next session. Shown with a file named in `execArgs`, in a
/// directory of its own.
#[test]
fn a_file_replaced_by_rename_stays_readable() {
    let Some((dir, pki)) = setup("a_file_replaced_by_rename_stays_readable") else {
        return;
    };
    let data_dir = TestDir::new("sandbox-renamed-data");
    let data = data_dir.write("data.txt", "first\n");
    let script = dir.write(
        "read.sh",
        "if read line < \"$1\"; then echo \"data: $line\"; else echo 'data: denied'; fi\n",
    );
    let body = format!(
        "[srv]\naccept = 127.0.0.1:0\ncert = {}\nexec = /bin/sh\nexecArgs = sh {} {}\n",
        pki.server.combined.display(),
        script.display(),
        data.display()
    );
    let t = Tunnel::start(&dir, "server", &body);
    let out = program_output(&t, "srv", &pki.ca_file);
    assert!(out.contains("data: first"), "{out:?}");
    write_atomic(&data, "second\n");
    let out = program_output(&t, "srv", &pki.ca_file);
    assert!(out.contains("data: second"), "after the rename: {out:?}");
}

/// `exec = sh` (found on PATH, as stunnel's execvp finds it) and a `#!/usr/bin/env sh`
/// script run inside the sandbox, and the reload check takes the configuration that
/// started.
#[test]
fn a_bare_program_name_and_an_env_script_run_inside_the_sandbox() {
    let Some((dir, pki)) = setup("a_bare_program_name_and_an_env_script") else {
        return;
    };
    let script = dir.write("hello.sh", "echo 'hello from bare'\n");
    let env_script = dir.write("env.sh", "#!/usr/bin/env sh\necho 'hello from env'\n");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&env_script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let body = format!(
        "[bare]\naccept = 127.0.0.1:0\ncert = {cert}\nexec = sh\nexecArgs = sh {}\n\
         [env]\naccept = 127.0.0.1:0\ncert = {cert}\nexec = {}\n",
        script.display(),
        env_script.display(),
        cert = pki.server.combined.display(),
    );
    let t = Tunnel::start(&dir, "server", &body);
    t.wait_for_log(
        "Service [bare]: exec sh runs inside the sandbox: it can run no other program",
        WAIT,
    );
    assert!(
        t.log_lines()
            .iter()
            .all(|l| !l.contains("not found on PATH")),
        "{:?}",
        t.log_lines()
    );
    let out = program_output(&t, "bare", &pki.ca_file);
    assert!(out.contains("hello from bare"), "exec = sh: {out:?}");
    let out = program_output(&t, "env", &pki.ca_file);
    assert!(out.contains("hello from env"), "#!/usr/bin/env sh: {out:?}");
    let header = header_of(&t, &body);
    assert!(
        reload(&t, &header, &body),
        "the configuration that started was refused at a reload"
    );
}

/// `chroot` and the sandbox together: the ruleset is built from paths as seen inside the
/// jail (docs/ARCHITECTURE.md, Sandbox). A certificate renewed in the jail's copy of the
/// startup directory loads at a reload; one in another directory of the jail is refused
/// by name; an `exec` program missing from the jail is a startup warning.
#[test]
fn a_chrooted_sandbox_allows_the_paths_inside_the_jail() {
    if !landlock_or_skip("a_chrooted_sandbox_allows_the_paths_inside_the_jail")
        || !require_root("a_chrooted_sandbox_allows_the_paths_inside_the_jail")
    {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let open_dir = |p: &Path| {
        std::fs::create_dir_all(p).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.to_path_buf()
    };
    let readable = |p: &Path| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    };
    let dir = TestDir::new("sandbox-chroot");
    let pki = Pki::new(&dir);
    let jail = open_dir(&dir.join("jail"));
    // The startup directory mirrored in the jail: what the plan, made after the chroot,
    // finds and allows.
    let mirror = open_dir(&jail.join(dir.path().strip_prefix("/").unwrap()));
    assert!(!jail.join("bin/cat").exists());
    let echo = Backend::echo();
    let (srv_port, exec_port) = (free_port(), free_port());
    let body = |cert: &Path| {
        format!(
            "chroot = {}\nsetuid = 65534\nsetgid = 65534\n\
             [srv]\naccept = 127.0.0.1:{srv_port}\nconnect = {}\ncert = {}\n\
             [exec]\naccept = 127.0.0.1:{exec_port}\nexec = /bin/cat\ncert = {}\n",
            jail.display(),
            echo.addr(),
            cert.display(),
            pki.server.combined.display()
        )
    };
    let first = body(&pki.server.combined);
    // The harness writes `<label>.conf` in `dir`: give the jail its copy before the start.
    let startup_cert = mirror.join(pki.server.combined.file_name().unwrap());
    std::fs::copy(&pki.server.combined, &startup_cert).unwrap();
    readable(&startup_cert);
    let conf_in_jail = mirror.join("chroot.conf");
    std::fs::write(&conf_in_jail, "").unwrap();
    readable(&conf_in_jail);
    let t = Tunnel::start(&dir, "chroot", &first);
    t.wait_for_log("Sandbox: Landlock ABI", WAIT);
    let missing = t.wait_for_log("Service [exec]: exec /bin/cat is not found", WAIT);
    assert!(!missing.contains("on PATH"), "{missing}");
    assert_eq!(served_cn(&t, srv_port, &pki.ca_file), "right.name");

    let header = "; reloaded, read inside the jail\nforeground = yes\ndebug = 7\n";
    let reload_in_jail = |cert: &Path| {
        reload_after(&t, || {
            write_atomic(&conf_in_jail, &format!("{header}{}", body(cert)));
            readable(&conf_in_jail);
        })
    };
    let renewed = pki
        .ca
        .issue("jailed.right.name", certs::SERVER_NAMES, KeyKind::EcP256)
        .write(&dir, "renewed");
    // In the jail, in another directory: refused, and the old certificate serves.
    let other = open_dir(&jail.join("elsewhere"));
    std::fs::copy(&renewed.combined, other.join("renewed.pem")).unwrap();
    readable(&other.join("renewed.pem"));
    assert!(
        !reload_in_jail(Path::new("/elsewhere/renewed.pem")),
        "a certificate outside the sandbox was loaded"
    );
    let why = t.wait_for_log("outside what the sandbox allowed", WAIT);
    assert!(why.contains("cert /elsewhere/renewed.pem"), "{why}");
    assert_eq!(served_cn(&t, srv_port, &pki.ca_file), "right.name");
    // In the jail's copy of the startup directory: loaded.
    let name = renewed.combined.file_name().unwrap();
    std::fs::copy(&renewed.combined, mirror.join(name)).unwrap();
    readable(&mirror.join(name));
    assert!(
        reload_in_jail(&dir.path().join(name)),
        "a certificate in the jail's startup directory was refused"
    );
    assert_eq!(served_cn(&t, srv_port, &pki.ca_file), "jailed.right.name");
}
