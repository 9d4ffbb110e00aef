//! Fuzz target `config_parse`: the whole configuration parser on in-memory text (lexer,
//! option table, inheritance, `include`, end-of-section and inetd checks), then the
//! runtime's reading of every accepted section (endpoint syntax, SNI split, protocol
//! side). Includes reach only the harness's fixed dirs or paths that do not exist.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rstunnel_fuzz::init();
    let isolated = rstunnel_fuzz::isolate_network();
    if !rstunnel_fuzz::config_is_contained(data, isolated) {
        return;
    }
    match rstunnel::config::parse_bytes("/etc/stunnel/fuzz.conf", data) {
        Ok(config) => {
            let _ = config.is_inetd_mode();
            rstunnel_fuzz::exercise_service(&config.defaults);
            for service in &config.services {
                rstunnel_fuzz::exercise_service(service);
            }
        }
        // The message as the user sees it: formatting must not panic either.
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
