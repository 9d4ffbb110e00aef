//! Passes the version of the OpenSSL headers that openssl-sys found to the crate, so that
//! `-version` can print what rstunnel was built with beside what it runs with.

fn main() {
    let version = std::env::var("DEP_OPENSSL_VERSION_NUMBER").unwrap_or_else(|_| "0".into());
    println!("cargo:rustc-env=RSTUNNEL_OPENSSL_VERSION_NUMBER={version}");
    println!("cargo:rerun-if-env-changed=DEP_OPENSSL_VERSION_NUMBER");
}
