//! Records the git commit the binary is built from, for `liqo-auth version`: the
//! `LIQO_AUTH_GIT_COMMIT` environment variable when set (CI, container builds without `.git`),
//! else `git rev-parse`, else `unknown`. A build without git still succeeds.

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
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}
