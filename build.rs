//! Records the git commit the binary is built from, for `liqo-auth version`: the
//! `LIQO_AUTH_GIT_COMMIT` environment variable when set (CI, container builds without `.git`),
//! else `git rev-parse`, else `unknown`. A build without git still succeeds.
//!
//! Release builds also get the binary's layout (see `link_layout`).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LIQO_AUTH_GIT_COMMIT");
    let from_env = std::env::var("LIQO_AUTH_GIT_COMMIT").ok().filter(|c| !c.trim().is_empty());
    let commit = from_env.or_else(|| git(&["rev-parse", "--short=12", "HEAD"])).unwrap_or_else(|| "unknown".into());
    // Rebuild when HEAD moves (a commit, a checkout): its reflog changes with each.
    if let Some(path) = git(&["rev-parse", "--git-path", "logs/HEAD"]) {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rustc-env=LIQO_AUTH_GIT_COMMIT={}", commit.trim());
    link_layout();
}

/// On a release build for x86_64 Linux with rustc's own lld (the default linker there since Rust
/// 1.90), the functions `serve` runs are placed together (`link/serve.order`, made by
/// `link/update-order.sh`), which keeps its resident code near 3 MB instead of most of the 13 MB
/// text, and relative relocations are packed (DT_RELR) when the C library linked against supports
/// them. Any other linker, target or profile gets neither: the flags are lld's.
/// `LIQO_AUTH_LINK_LAYOUT=0` turns both off.
fn link_layout() {
    println!("cargo:rerun-if-changed=link/serve.order");
    println!("cargo:rerun-if-env-changed=LIQO_AUTH_LINK_LAYOUT");
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    // A linker chosen in the configuration or the flags may not be lld.
    let own_linker = std::env::var_os("RUSTC_LINKER").is_none() && !env("CARGO_ENCODED_RUSTFLAGS").contains("link");
    if env("PROFILE") != "release"
        || env("TARGET") != "x86_64-unknown-linux-gnu"
        || env("LIQO_AUTH_LINK_LAYOUT") == "0"
        || !own_linker
        || rustc_minor().is_none_or(|minor| minor < 90)
    {
        return;
    }
    let order = std::path::Path::new(&env("CARGO_MANIFEST_DIR")).join("link/serve.order");
    if order.exists() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        // Names the current build no longer has are skipped, not reported one by one.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    // lld then requires GLIBC_ABI_DT_RELR at run time: an older C library refuses to load the
    // binary with a clear message instead of running it unrelocated.
    if glibc_packs_relocations() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The minor version of the compiler building this crate.
fn rustc_minor() -> Option<u32> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    text.split_whitespace().nth(1)?.split('.').nth(1)?.parse().ok()
}

/// Whether the C library the binary links against declares DT_RELR support (glibc 2.36 and later).
fn glibc_packs_relocations() -> bool {
    [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
        "/usr/lib64/libc.so.6",
    ]
    .iter()
    .find_map(|path| std::fs::read(path).ok())
    .is_some_and(|libc| libc.windows(17).any(|w| w == b"GLIBC_ABI_DT_RELR"))
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}
