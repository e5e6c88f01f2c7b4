//! Go-style command lines (`auth-service -flag=value ...`): `go_style_argv` translates what Go's
//! `flag` package accepted, then clap parses the result as the binary would. Arguments are the
//! input split at NUL bytes (a NUL cannot occur inside a real argument), any bytes, not only
//! UTF-8. Neither step may panic, and a translation clap refuses must be reported, not crash.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;

use clap::Parser as _;
use libfuzzer_sys::fuzz_target;
use liqo_auth::cli::{go_style_argv, Args};

fuzz_target!(|data: &[u8]| {
    let mut argv = vec![OsString::from("auth-service")];
    argv.extend(data.split(|b| *b == 0).map(|arg| OsString::from_vec(arg.to_vec())));
    if let Ok(translated) = go_style_argv(argv) {
        let _ = Args::try_parse_from(translated);
    }
});
