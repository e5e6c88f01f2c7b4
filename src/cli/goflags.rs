//! Go-style command lines for the binary invoked as `auth-service` (the reference image's name):
//! [`go_style_argv`] turns what Go's `flag` package (plus klog and controller-runtime) accepted
//! into the `liqo-auth serve` command line clap parses.
//!
//! Go accepts `-flag=value`, `--flag=value`, `-flag value` and `--flag value` alike; a boolean
//! flag bare (`-enable-tls`) or with `=true|false|1|0|t|f|...` (never as a separate argument);
//! the same flag again replaces the earlier value; parsing stops at `--`. Every long flag of
//! `liqo-auth serve` (hidden compatibility ones included, so every flag of the reference binary)
//! is accepted in all these spellings. klog's `-v`/`--v=N` becomes `--log-level=N`; klog's other
//! flags (`--logtostderr`, `--vmodule`, ...) are checked as klog checks them and then accepted with
//! a warning at start (they mean nothing here). Anything else is an error that names the flag, as
//! Go's is, never a panic.
//!
//! Deliberately different from Go: an argument that is not a flag is an error instead of
//! silently ending flag parsing (`-enable-tls false` would have left TLS on and dropped every
//! later flag).

use std::collections::HashMap;
use std::ffi::OsString;

use clap::{ArgAction, CommandFactory};

/// Why a Go-style command line was refused. Messages follow Go's `flag` package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoFlagError {
    #[error("argument {position} is not valid UTF-8")]
    NotUtf8 { position: usize },
    #[error("bad flag syntax: {arg}")]
    BadSyntax { arg: String },
    #[error("flag provided but not defined: -{name} (auth-service accepts the reference's flags, klog's, and those of `liqo-auth serve --help`)")]
    Undefined { name: String },
    #[error("flag needs an argument: -{name}")]
    NeedsArgument { name: String },
    #[error("invalid boolean value {value:?} for -{name}: use -{name}, -{name}=true or -{name}=false")]
    InvalidBool { name: String, value: String },
    #[error("invalid value {value:?} for flag -{name}: {expected}")]
    InvalidValue { name: String, value: String, expected: &'static str },
    #[error(
        "unexpected argument {arg:?}: auth-service takes only flags (a boolean flag takes its value as -flag=false)"
    )]
    NotAFlag { arg: String },
}

/// Translates `argv` (program name first) as Go's `flag` would parse it into `liqo-auth`'s own
/// command line: `[program, root flags..., "serve", serve flags...]`, each flag spelled
/// `--name=value` (or bare, for clap's presence flags).
pub fn go_style_argv(argv: Vec<OsString>) -> Result<Vec<OsString>, GoFlagError> {
    let mut argv = argv.into_iter();
    let program = argv.next().unwrap_or_else(|| OsString::from("auth-service"));
    let mut args = Vec::new();
    for (index, arg) in argv.enumerate() {
        args.push(arg.into_string().map_err(|_| GoFlagError::NotUtf8 { position: index + 1 })?);
    }
    let flags = KNOWN_FLAGS.get_or_init(known_flags);
    let mut root = Vec::new();
    let mut serve: Vec<(Option<String>, String)> = Vec::new();
    let mut rest = args.into_iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            if let Some(extra) = rest.next() {
                return Err(GoFlagError::NotAFlag { arg: extra });
            }
            break;
        }
        if arg.len() < 2 || !arg.starts_with('-') {
            return Err(GoFlagError::NotAFlag { arg });
        }
        let name = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        if name.is_empty() || name.starts_with('-') || name.starts_with('=') {
            return Err(GoFlagError::BadSyntax { arg });
        }
        let (name, inline) = match name.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (name, None),
        };
        let Some(flag) = flags.get(name) else {
            return Err(GoFlagError::Undefined { name: name.to_owned() });
        };
        let value = match (flag.takes_value(), inline) {
            (false, Some(value)) => Some(parse_bool(name, &value)?.to_string()),
            (false, None) => None,
            (true, Some(value)) => Some(value),
            (true, None) => Some(rest.next().ok_or_else(|| GoFlagError::NeedsArgument { name: name.to_owned() })?),
        };
        match flag {
            Flag::Help => serve.push((None, "--help".to_owned())),
            Flag::Version => root.push("--version".to_owned()),
            Flag::Clap { long, presence, repeatable, .. } => {
                let spelled = match (presence, value) {
                    // clap's presence flags take no value: true is the bare flag, false is absence.
                    (true, Some(value)) if value == "false" => None,
                    (true, _) => Some(format!("--{long}")),
                    (false, Some(value)) => Some(format!("--{long}={value}")),
                    (false, None) => Some(format!("--{long}=true")),
                };
                // Go keeps the last value of a flag given twice; clap refuses the repeat.
                let key = (!repeatable).then(|| long.clone());
                if key.is_some() {
                    serve.retain(|(earlier, _)| *earlier != key);
                }
                serve.extend(spelled.map(|spelled| (key, spelled)));
            }
            Flag::KlogVerbosity => {
                let value = value.unwrap_or_default();
                let level = value.trim().parse::<i32>().map_err(|_| GoFlagError::InvalidValue {
                    name: name.to_owned(),
                    value: value.clone(),
                    expected: "a verbosity number",
                })?;
                let key = Some("log-level".to_owned());
                serve.retain(|(earlier, _)| *earlier != key);
                serve.push((key, format!("--log-level={}", level.clamp(0, 9))));
            }
            Flag::KlogIgnored(check) => {
                let given = match value {
                    Some(value) => {
                        check.validate(name, &value)?;
                        format!("--{name}={value}")
                    }
                    None => format!("--{name}"),
                };
                serve.push((None, format!("--{IGNORED_GO_FLAG}={given}")));
            }
        }
    }
    let mut out = vec![program];
    out.extend(root.into_iter().map(OsString::from));
    out.push("serve".into());
    out.extend(serve.into_iter().map(|(_, arg)| OsString::from(arg)));
    Ok(out)
}

/// The hidden `serve` flag carrying a klog-only flag, so `serve` warns about it at start.
pub const IGNORED_GO_FLAG: &str = "ignored-go-flag";

/// How one Go-style flag name is handled.
#[derive(Debug, Clone)]
enum Flag {
    /// A `liqo-auth serve` flag (or a global one), by its clap long name.
    Clap {
        long: String,
        /// Takes no value in clap (`SetTrue`, `Count`): spelled bare or left out.
        presence: bool,
        /// Takes an optional value in clap (`--enable-tls[=true|false]`): a Go boolean.
        boolean: bool,
        /// Repeatable in clap (`Append`): every occurrence is kept.
        repeatable: bool,
    },
    Help,
    Version,
    /// klog's `-v`.
    KlogVerbosity,
    /// A klog flag with no effect here, and how klog validates its value.
    KlogIgnored(KlogValue),
}

/// The value kinds of klog's flags, checked as klog checks them.
#[derive(Debug, Clone, Copy)]
enum KlogValue {
    Bool,
    Text,
    Unsigned,
    Severity,
}

impl Flag {
    /// Whether Go treats it as a non-boolean flag (one that may take the next argument).
    fn takes_value(&self) -> bool {
        match self {
            Self::Clap { presence, boolean, .. } => !presence && !boolean,
            Self::Help | Self::Version => false,
            Self::KlogVerbosity => true,
            Self::KlogIgnored(kind) => !matches!(kind, KlogValue::Bool),
        }
    }
}

impl KlogValue {
    fn validate(self, name: &str, value: &str) -> Result<(), GoFlagError> {
        let invalid = |expected| GoFlagError::InvalidValue { name: name.to_owned(), value: value.to_owned(), expected };
        match self {
            Self::Bool => parse_bool(name, value).map(drop),
            Self::Text => Ok(()),
            Self::Unsigned => value.parse::<u64>().map(drop).map_err(|_| invalid("an unsigned number")),
            Self::Severity => {
                let known = ["INFO", "WARNING", "ERROR", "FATAL", "0", "1", "2", "3"];
                known
                    .contains(&value.to_ascii_uppercase().as_str())
                    .then_some(())
                    .ok_or_else(|| invalid("INFO, WARNING, ERROR or FATAL"))
            }
        }
    }
}

/// klog's flags (`klog.InitFlags`) other than `-v`.
const KLOG_FLAGS: [(&str, KlogValue); 13] = [
    ("logtostderr", KlogValue::Bool),
    ("alsologtostderr", KlogValue::Bool),
    ("add_dir_header", KlogValue::Bool),
    ("skip_headers", KlogValue::Bool),
    ("skip_log_headers", KlogValue::Bool),
    ("one_output", KlogValue::Bool),
    ("legacy_stderr_threshold_behavior", KlogValue::Bool),
    ("log_dir", KlogValue::Text),
    ("log_file", KlogValue::Text),
    ("log_backtrace_at", KlogValue::Text),
    ("vmodule", KlogValue::Text),
    ("log_file_max_size", KlogValue::Unsigned),
    ("stderrthreshold", KlogValue::Severity),
];

static KNOWN_FLAGS: std::sync::OnceLock<HashMap<String, Flag>> = std::sync::OnceLock::new();

/// Every flag name Go-style parsing accepts: `liqo-auth serve`'s long flags and aliases (the
/// reference's among them), the global ones, `-h`/`-help`, and klog's.
fn known_flags() -> HashMap<String, Flag> {
    let mut command = crate::cli::Args::command();
    command.build();
    let mut flags = HashMap::new();
    let version = command.get_arguments().find(|a| matches!(a.get_action(), ArgAction::Version)).cloned();
    let serve = command.find_subcommand("serve").expect("serve is a subcommand").clone();
    for arg in serve.get_arguments().chain(version.as_ref()) {
        let flag = match arg.get_action() {
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong => Flag::Help,
            ArgAction::Version => Flag::Version,
            action => {
                let Some(long) = arg.get_long() else { continue };
                let presence = matches!(action, ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count);
                let boolean = !presence && arg.get_num_args().is_some_and(|range| range.min_values() == 0);
                let repeatable = matches!(action, ArgAction::Append);
                Flag::Clap { long: long.to_owned(), presence, boolean, repeatable }
            }
        };
        for name in arg.get_long().into_iter().chain(arg.get_all_aliases().unwrap_or_default()) {
            flags.insert(name.to_owned(), flag.clone());
        }
    }
    for name in ["h", "help"] {
        flags.insert(name.to_owned(), Flag::Help);
    }
    flags.insert("v".to_owned(), Flag::KlogVerbosity);
    for (name, kind) in KLOG_FLAGS {
        flags.insert(name.to_owned(), Flag::KlogIgnored(kind));
    }
    flags
}

/// Go's `strconv.ParseBool`.
fn parse_bool(name: &str, value: &str) -> Result<bool, GoFlagError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(GoFlagError::InvalidBool { name: name.to_owned(), value: value.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Args, Command, ServeArgs};

    fn translate(args: &[&str]) -> Result<Vec<String>, GoFlagError> {
        let argv = std::iter::once("auth-service").chain(args.iter().copied()).map(OsString::from).collect();
        go_style_argv(argv).map(|out| out.into_iter().map(|a| a.into_string().expect("UTF-8")).collect())
    }

    fn serve(args: &[&str]) -> (Args, ServeArgs) {
        let argv = translate(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let parsed = Args::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let Command::Serve(serve) = &parsed.command else { panic!("serve") };
        let serve = (**serve).clone();
        (parsed, serve)
    }

    #[test]
    fn every_go_spelling_of_a_value_flag_means_the_same() {
        for spelling in
            [&["-namespace=liqo"][..], &["--namespace=liqo"], &["-namespace", "liqo"], &["--namespace", "liqo"]]
        {
            assert_eq!(serve(spelling).1.backend.namespace.as_deref(), Some("liqo"), "{spelling:?}");
        }
        // A value may start with a dash when it is the next argument, as in Go.
        assert_eq!(serve(&["-cluster-name", "-x"]).1.cluster_name.as_deref(), Some("-x"));
        assert_eq!(serve(&["-aws-access-key-id="]).1.aws_access_key_id.as_deref(), Some(""));
    }

    #[test]
    fn booleans_are_bare_or_take_every_value_go_parses() {
        assert!(serve(&["-enable-tls"]).1.enable_tls);
        assert!(serve(&["--enable-tls"]).1.enable_tls);
        for yes in ["1", "t", "T", "true", "TRUE", "True"] {
            assert!(serve(&[&format!("-enable-tls={yes}")]).1.enable_tls, "{yes}");
        }
        for no in ["0", "f", "F", "false", "FALSE", "False"] {
            assert!(!serve(&[&format!("--enable-authentication={no}")]).1.enable_authentication, "{no}");
        }
        let error = translate(&["-enable-tls=yes"]).unwrap_err();
        assert_eq!(error, GoFlagError::InvalidBool { name: "enable-tls".into(), value: "yes".into() });
        // Go never takes a boolean's value from the next argument: here it is refused, not dropped.
        assert!(matches!(translate(&["-enable-tls", "false"]), Err(GoFlagError::NotAFlag { .. })));
    }

    #[test]
    fn the_reference_charts_command_line_is_accepted() {
        let (_, serve) = serve(&[
            "--cluster-id=8c1f2d3e-4f5a-4b7c-9d8e-aaaaaaaaaaaa",
            "--cluster-name=rome",
            "--namespace=liqo",
            "--address=:8443",
            "--enable-tls",
            "--enable-authentication=true",
            "--advertise-api-server-address=https://10.0.0.5:6443",
            "--advertise-api-server-trusted-ca",
            "--resync-period=30s",
            "--client-qps=100",
            "--client-max-burst=100",
            "-kubeconfig=/etc/kubeconfig",
        ]);
        assert_eq!((serve.address.as_str(), serve.cluster_name.as_deref()), (":8443", Some("rome")));
        assert!(serve.enable_tls && serve.enable_authentication && serve.advertise_api_server_trusted_ca);
        assert_eq!(serve.backend.kubeconfig.as_deref(), Some(std::path::Path::new("/etc/kubeconfig")));
    }

    #[test]
    fn klog_verbosity_becomes_the_log_level_in_every_spelling() {
        for spelling in [&["--v=4"][..], &["-v=4"], &["-v", "4"], &["--v", "4"]] {
            assert_eq!(serve(spelling).0.log.level, "4", "{spelling:?}");
        }
        assert_eq!(serve(&["--v=2", "-v=0"]).0.log.level, "0", "the last one wins, as in Go");
        assert_eq!(serve(&["--log-level=debug", "--v=7"]).0.log.level, "7");
        assert!(matches!(translate(&["--v=loud"]), Err(GoFlagError::InvalidValue { .. })));
        assert_eq!(translate(&["-v"]).unwrap_err(), GoFlagError::NeedsArgument { name: "v".into() });
    }

    #[test]
    fn klog_only_flags_are_accepted_and_reported_for_a_warning() {
        let (_, serve) = serve(&[
            "--logtostderr",
            "-alsologtostderr=false",
            "--vmodule=issuer=4",
            "--add_dir_header",
            "--skip_headers=true",
            "--one_output",
            "-log_file",
            "/tmp/auth.log",
            "--log_file_max_size=1800",
            "--stderrthreshold=ERROR",
            "--log_dir=/tmp",
        ]);
        let config = serve.into_config().expect("config");
        assert_eq!(
            config.ignored_flags,
            [
                "--logtostderr",
                "--alsologtostderr=false",
                "--vmodule=issuer=4",
                "--add_dir_header",
                "--skip_headers=true",
                "--one_output",
                "--log_file=/tmp/auth.log",
                "--log_file_max_size=1800",
                "--stderrthreshold=ERROR",
                "--log_dir=/tmp",
            ]
        );
        assert!(matches!(translate(&["--stderrthreshold=LOUD"]), Err(GoFlagError::InvalidValue { .. })));
        assert!(matches!(translate(&["--log_file_max_size=-1"]), Err(GoFlagError::InvalidValue { .. })));
        assert!(matches!(translate(&["--logtostderr=maybe"]), Err(GoFlagError::InvalidBool { .. })));
    }

    #[test]
    fn a_flag_given_twice_keeps_its_last_value_and_repeatable_ones_keep_all() {
        assert_eq!(serve(&["-namespace=a", "--namespace", "b"]).1.backend.namespace.as_deref(), Some("b"));
        assert!(!serve(&["-enable-tls", "-enable-tls=false"]).1.enable_tls);
        assert_eq!(serve(&["-tls-san=a", "--tls-san", "b"]).1.tls_san, ["a", "b"]);
    }

    #[test]
    fn liqo_auth_serve_flags_work_in_go_spelling_too() {
        let (parsed, serve) =
            serve(&["-backend", "local", "-data-dir=/tmp/x", "-log-format", "json", "-metrics-address=off"]);
        assert_eq!(serve.backend.backend, crate::cli::BackendKind::Local);
        assert_eq!(parsed.log.format, crate::cli::LogFormat::Json);
        assert_eq!(serve.metrics_address.as_deref(), Some("off"));
    }

    #[test]
    fn unknown_flags_and_bad_syntax_are_errors_that_name_them() {
        let error = translate(&["--namespace=liqo", "-bogus=1"]).unwrap_err();
        assert_eq!(error, GoFlagError::Undefined { name: "bogus".into() });
        assert!(error.to_string().starts_with("flag provided but not defined: -bogus"), "{error}");
        for bad in ["---namespace", "-=x", "--=x"] {
            assert_eq!(translate(&[bad]).unwrap_err(), GoFlagError::BadSyntax { arg: bad.into() }, "{bad}");
        }
        assert_eq!(translate(&["-namespace"]).unwrap_err(), GoFlagError::NeedsArgument { name: "namespace".into() });
        assert!(matches!(translate(&["serve"]), Err(GoFlagError::NotAFlag { .. })));
        assert!(matches!(translate(&["-"]), Err(GoFlagError::NotAFlag { .. })));
        assert!(matches!(translate(&["--", "x"]), Err(GoFlagError::NotAFlag { .. })));
        assert_eq!(translate(&["--namespace=a", "--"]).unwrap(), ["auth-service", "serve", "--namespace=a"]);
    }

    #[test]
    fn help_and_version_reach_clap() {
        for help in ["-h", "-help", "--help"] {
            assert_eq!(translate(&[help]).unwrap(), ["auth-service", "serve", "--help"]);
        }
        assert_eq!(translate(&["-version"]).unwrap(), ["auth-service", "--version", "serve"]);
    }

    #[test]
    fn arbitrary_command_lines_never_panic_and_what_passes_parses_or_fails_cleanly() {
        use rand::{Rng, SeedableRng};
        let pieces = [
            "-",
            "--",
            "=",
            "v",
            "namespace",
            "enable-tls",
            "true",
            "F",
            "x",
            "é",
            "h",
            "log_dir",
            "tls-san",
            "stderrthreshold",
            "address",
            ":0",
            "help",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..3000 {
            let args: Vec<String> = (0..rng.random_range(0..6))
                .map(|_| (0..rng.random_range(1..5)).map(|_| pieces[rng.random_range(0..pieces.len())]).collect())
                .collect();
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Ok(argv) = translate(&refs) {
                // Anything translated is clap's to accept or refuse, with an error, never a panic.
                let _ = Args::try_parse_from(&argv);
            }
        }
    }

    #[test]
    fn arguments_that_are_not_utf8_are_refused() {
        use std::os::unix::ffi::OsStringExt;
        let argv = vec![OsString::from("auth-service"), OsString::from_vec(vec![b'-', 0xff])];
        assert_eq!(go_style_argv(argv), Err(GoFlagError::NotUtf8 { position: 1 }));
        assert_eq!(go_style_argv(Vec::new()).unwrap(), ["auth-service", "serve"]);
    }
}
