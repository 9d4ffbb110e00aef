//! Fuzz target `option_values`: one value through one row of the option table, the way
//! the parser calls it, without the lexer in front. Input: `g` or `s` (global part or a
//! section), the option name (any case, aliases too), `=`, the value; e.g.
//! `ssocket=a:SO_LINGER=1:5`. Every setter is reachable: addresses, socket options,
//! durations, booleans, verify levels, `sni`, `debug = fac.level`, `sslVersion*`,
//! `options`, OCSP URLs and flags, users and groups. What the setter stored is then read
//! as the runtime reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rstunnel::config::options::{self, Handler, Names, Target};
use rstunnel::config::{GlobalOptions, ServiceOptions};

fuzz_target!(|data: &[u8]| {
    rstunnel_fuzz::init();
    let isolated = rstunnel_fuzz::isolate_network();
    let Some((&scope, rest)) = data.split_first() else {
        return;
    };
    // Values reach setters as the lexer makes them: lossy UTF-8.
    let text = String::from_utf8_lossy(rest);
    let Some((name, value)) = text.split_once('=') else {
        return;
    };
    let Some(spec) = options::find(name) else {
        return;
    };
    let Handler::Set(setter) = &spec.handler else {
        return;
    };
    if !rstunnel_fuzz::value_is_contained(name, value, isolated) {
        return;
    }
    let mut global = GlobalOptions::default();
    let mut service = ServiceOptions::default();
    let mut target = Target {
        global: &mut global,
        service: &mut service,
        in_global_part: scope == b'g',
        names: Names::LookUp,
        not_checked: None,
    };
    if setter.apply(&mut target, value).is_ok() {
        rstunnel_fuzz::exercise_service(&service);
    }
});
