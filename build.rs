//! Tells the crate which OpenSSL it is built against, from what openssl-sys found
//! (`DEP_OPENSSL_VERSION_NUMBER`, `DEP_OPENSSL_LIBRESSL_VERSION_NUMBER`):
//!
//! * `RSTUNNEL_OPENSSL_VERSION_NUMBER` / `RSTUNNEL_LIBRESSL_VERSION_NUMBER` (hex, as
//!   OpenSSL's `OPENSSL_VERSION_NUMBER`), so that `-version` prints what rstunnel was built
//!   with beside what it runs with;
//! * the cfgs that `src/tls/compat.rs` gates on (STYLE.md practice 9: nowhere else):
//!   `ossl110`, `ossl110h`, `ossl111`, `ossl300`, `ossl400` for OpenSSL at or above that
//!   version, and `libressl` (and `libressl360` from 3.6) for LibreSSL, which sets none of
//!   the `ossl` ones. The names are the ones the `openssl` crate uses for the same versions.
//!
//! openssl-sys 0.9.118 itself accepts OpenSSL 1.1.0 and later and LibreSSL 3.5 and later,
//! and fails the build with its own message for anything older.

fn hex_env(name: &str) -> Option<u64> {
    println!("cargo:rerun-if-env-changed={name}");
    let text = std::env::var(name).ok()?;
    u64::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

// Version numbers are grouped as OpenSSL's fields: 0xM_NN_FF_PP_S.
#[allow(clippy::unusual_byte_groupings)]
fn main() {
    const CFGS: &[&str] = &[
        "ossl110",
        "ossl110h",
        "ossl111",
        "ossl300",
        "ossl400",
        "libressl",
        "libressl360",
    ];
    for cfg in CFGS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }

    let openssl = hex_env("DEP_OPENSSL_VERSION_NUMBER");
    let libressl = hex_env("DEP_OPENSSL_LIBRESSL_VERSION_NUMBER");
    println!(
        "cargo:rustc-env=RSTUNNEL_OPENSSL_VERSION_NUMBER={:x}",
        openssl.unwrap_or(0)
    );
    println!(
        "cargo:rustc-env=RSTUNNEL_LIBRESSL_VERSION_NUMBER={:x}",
        libressl.unwrap_or(0)
    );

    if let Some(version) = libressl {
        // LibreSSL reports OPENSSL_VERSION_NUMBER 0x20000000 and has its own feature set.
        println!("cargo:rustc-cfg=libressl");
        if version >= 0x3_06_00_00_0 {
            println!("cargo:rustc-cfg=libressl360");
        }
        return;
    }
    let Some(version) = openssl else {
        return;
    };
    // 0xMNNFFPPS before 3.0 (PP: patch letter), 0xMNN00PP0 from 3.0 on.
    for (cfg, since) in [
        ("ossl110", 0x1_01_00_00_0_u64),
        ("ossl110h", 0x1_01_00_08_0),
        ("ossl111", 0x1_01_01_00_0),
        ("ossl300", 0x3_00_00_00_0),
        ("ossl400", 0x4_00_00_00_0),
    ] {
        if version >= since {
            println!("cargo:rustc-cfg={cfg}");
        }
    }
}
