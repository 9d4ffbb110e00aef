//! 100 sessions open at the same time through both tunnels, each with its own random payload,
//! all echoed back intact: sessions never mix up or lose each other's bytes.
//!
//! Each session first sends half its payload and reads that half back, then waits until all
//! 100 sessions got that far (so 100 are provably open at once), then sends the rest,
//! shuts down its write side and reads the rest until EOF.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const SESSIONS: usize = 100;
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(30);

/// Distinct sizes (16 KiB + i·1009), so the close lines can be matched to sessions.
fn size_of(i: usize) -> usize {
    16 * 1024 + i * 1009
}

fn session(
    entry: SocketAddr,
    i: usize,
    ready: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) -> Result<(), String> {
    let data = payload(1000 + i as u64, size_of(i));
    let (first, second) = data.split_at(data.len() / 2);
    let mut s = connect(entry);
    let result = (|| -> Result<(), String> {
        s.write_all(first)
            .map_err(|e| format!("writing first half: {e}"))?;
        let mut back = vec![0; first.len()];
        s.read_exact(&mut back)
            .map_err(|e| format!("reading first half back: {e}"))?;
        if back != first {
            return Err("first half came back different".into());
        }
        Ok(())
    })();
    // Count in even on failure, so the others do not wait for us.
    if result.is_err() {
        failed.fetch_add(1, Ordering::SeqCst);
    }
    ready.fetch_add(1, Ordering::SeqCst);
    result?;
    let deadline = Instant::now() + RENDEZVOUS_TIMEOUT;
    while ready.load(Ordering::SeqCst) < SESSIONS {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} sessions got going",
                ready.load(Ordering::SeqCst)
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if failed.load(Ordering::SeqCst) > 0 {
        return Err("another session failed; not continuing".into());
    }
    let mut w = s.try_clone().unwrap();
    let rest = second.to_vec();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        w.write_all(&rest)?;
        w.shutdown(Shutdown::Write)
    });
    let mut back = Vec::new();
    let r = s.read_to_end(&mut back);
    writer
        .join()
        .unwrap()
        .map_err(|e| format!("writing second half: {e}"))?;
    r.map_err(|e| format!("reading second half back: {e}"))?;
    if back != second {
        return Err(format!(
            "second half came back different ({} bytes, expected {})",
            back.len(),
            second.len()
        ));
    }
    Ok(())
}

#[test]
fn hundred_parallel_sessions_echo_intact() {
    let dir = TestDir::new("parallel");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let pair = TunnelPair::start(&dir, &pki, echo.addr(), "", "");
    let entry = pair.entry();

    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let (ready, failed) = (ready.clone(), failed.clone());
            std::thread::spawn(move || session(entry, i, ready, failed))
        })
        .collect();
    let errors: Vec<String> = handles
        .into_iter()
        .enumerate()
        .filter_map(|(i, h)| match h.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("session {i}: {e}")),
            Err(_) => Some(format!("session {i}: panicked")),
        })
        .collect();
    assert!(
        errors.is_empty(),
        "{} of {SESSIONS} sessions failed:\n{}",
        errors.len(),
        errors.join("\n")
    );
    assert_eq!(
        echo.connections(),
        SESSIONS,
        "one backend connection per session"
    );

    // Every session's close line carries its own size, both ways.
    let mut expected: Vec<u64> = (0..SESSIONS).map(|i| size_of(i) as u64).collect();
    expected.sort_unstable();
    for (name, t) in [("client", &pair.client), ("server", &pair.server)] {
        let closes = t.wait_close_counts(SESSIONS, Duration::from_secs(20));
        assert_eq!(
            closes.len(),
            SESSIONS,
            "{name} tunnel: one close line per session"
        );
        for c in &closes {
            assert_eq!(
                c.sent_to_tls, c.sent_to_socket,
                "{name} tunnel: echo moves the same bytes both ways: {c:?}"
            );
        }
        let mut got: Vec<u64> = closes.iter().map(|c| c.sent_to_tls).collect();
        got.sort_unstable();
        assert_eq!(got, expected, "{name} tunnel: per-session byte counts");
    }
}
