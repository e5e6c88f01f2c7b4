//! README.md's local walkthrough, run exactly as printed: the shell blocks are read from the
//! README (so the documentation cannot drift from what works), with `liqo-auth` on PATH being
//! this build's binary. Only the two fixed ports are replaced by free ones, so concurrent runs
//! do not collide. Also the command-line conventions (exit codes, JSON errors, help) through
//! the real binary.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const README: &str = include_str!("../../README.md");

/// The text of the first ```sh block after `<!-- marker -->`.
fn block(marker: &str) -> String {
    let tag = format!("<!-- {marker} -->");
    let after = &README[README.find(&tag).unwrap_or_else(|| panic!("README.md has no {tag}")) + tag.len()..];
    let body = &after[after.find("```sh\n").expect("a sh block follows the marker") + "```sh\n".len()..];
    body[..body.find("```").expect("the block ends")].to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A directory whose only `liqo-auth` is this build's binary, for PATH.
fn bin_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_liqo-auth"), dir.join("liqo-auth")).unwrap();
    dir
}

fn shell(root: &Path, script: &str) -> Command {
    let path = format!("{}:{}", bin_dir_path(root).display(), std::env::var("PATH").unwrap_or_default());
    let mut command = Command::new("sh");
    command
        .args(["-ec", script])
        .current_dir(root)
        .env("PATH", path)
        .env("HOME", root)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("RUST_BACKTRACE", "0");
    command
}

fn bin_dir_path(root: &Path) -> std::path::PathBuf {
    root.join("bin")
}

fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The provider stops when the test ends, whatever happens.
struct Provider(std::process::Child);

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_local_walkthrough_peers_two_clusters_as_printed() {
    let root = tempfile::tempdir().unwrap();
    bin_dir(root.path());
    let (public, admin) = (free_port(), free_port());
    let serve = block("walkthrough:local:serve");
    assert!(serve.contains("127.0.0.1:5000") && serve.contains("127.0.0.1:9090"), "{serve}");
    let serve = serve
        .trim()
        .replace("127.0.0.1:5000", &format!("127.0.0.1:{public}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin}"));
    let log = std::fs::File::create(root.path().join("serve.log")).unwrap();
    let provider = Provider(
        shell(root.path(), &format!("exec {serve}")).stdout(Stdio::null()).stderr(log).spawn().expect("sh runs"),
    );
    // `serve` records its URL and pin once it listens: that is what `token create` reads.
    let record = root.path().join("liqo-auth-data/serving.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !record.exists() {
        assert!(Instant::now() < deadline, "serve did not start: {}", read(&root.path().join("serve.log")));
        std::thread::sleep(Duration::from_millis(50));
    }

    let steps = block("walkthrough:local:steps");
    let output = shell(root.path(), &steps).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "the walkthrough failed:\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let url = format!("https://127.0.0.1:{public}");
    assert!(
        stdout.contains(&format!("liqo-auth peer --auth-url {url} --token-file liqo-auth-join-token-")),
        "{stdout}"
    );
    assert!(stdout.contains("Obtained an identity from provider"), "{stdout}");
    assert!(stdout.contains("rome"), "tenant list shows the consumer: {stdout}");
    assert!(stdout.contains(&format!("AUTH URL      {url}")), "info shows the URL: {stdout}");
    assert!(stdout.contains("PEERS         1"), "{stdout}");
    let kubeconfig = read(&root.path().join("rome-to-provider.kubeconfig"));
    assert!(kubeconfig.contains("client-certificate-data"), "{kubeconfig}");
    drop(provider);
}

#[test]
fn the_serve_log_names_a_token_create_command_that_works_as_printed() {
    let root = tempfile::tempdir().unwrap();
    bin_dir(root.path());
    let log = std::fs::File::create(root.path().join("serve.log")).unwrap();
    let provider = Provider(
        shell(root.path(), "exec liqo-auth serve --backend local --data-dir 'my data' --enable-tls --address 127.0.0.1:0 --metrics-address off")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let hint = loop {
        let log = read(&root.path().join("serve.log"));
        if let Some(at) = log.find("the command to run with: ") {
            let rest = &log[at + "the command to run with: ".len()..];
            break rest[..rest.find(" auth.url=").expect("fields follow")].to_owned();
        }
        assert!(Instant::now() < deadline, "no hint in the log: {log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(hint.starts_with("liqo-auth token create --backend local --data-dir 'my data'"), "{hint}");
    let output = shell(root.path(), &hint).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{hint}: {stderr}");
    assert!(stdout.starts_with("liqo-auth peer --auth-url https://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains(" --ca-hash sha256:"), "{stdout}");
    assert!(stderr.contains("--backend local --data-dir DIR"), "says what a local consumer adds: {stderr}");
    drop(provider);
}

#[test]
fn errors_are_printed_once_with_a_stable_exit_code_and_as_json_with_o_json() {
    let root = tempfile::tempdir().unwrap();
    bin_dir(root.path());
    // No cluster configured at all: one line, one hint, exit 1.
    let output = shell(root.path(), "liqo-auth token list").output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "printed once: {stderr}");
    assert_eq!(stderr.matches("No such file").count(), 0, "{stderr}");
    assert!(stderr.contains("--backend local"), "the hint: {stderr}");
    // The same as a document on stdout.
    let output = shell(root.path(), "liqo-auth token list -o json").output().unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.is_empty(), "{stderr}");
    let error: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON document");
    assert_eq!(error["error"]["code"], "kubernetes_unreachable");

    // Unknown IDs: not found (1) unless --ignore-not-found (0); a dry run removes nothing.
    let init = shell(root.path(), "liqo-auth init --backend local").output().unwrap();
    assert!(init.status.success(), "{}", text(&init).1);
    for (script, code) in [
        ("liqo-auth token revoke 0123456789abcdef0123456789abcdef --backend local", 1),
        ("liqo-auth token revoke 0123456789abcdef0123456789abcdef --backend local --ignore-not-found", 0),
        ("liqo-auth tenant remove peer-1 --backend local", 1),
        ("liqo-auth tenant remove peer-1 --backend local --ignore-not-found", 0),
        ("liqo-auth tenant remove peer-1 --backend local --dry-run --ignore-not-found", 0),
        ("liqo-auth token rotate-key --backend local --dry-run", 0),
        ("liqo-auth token list --backend local --unknown-flag", 64),
        ("liqo-auth help --help", 0),
        ("liqo-auth help token create", 0),
        ("liqo-auth help no-such-command", 64),
        ("liqo-auth completion bash", 0),
    ] {
        let output = shell(root.path(), script).output().unwrap();
        assert_eq!(output.status.code(), Some(code), "{script}: {:?}", text(&output));
    }
    let output = shell(root.path(), "liqo-auth tenant remove peer-1 --backend local -o json").output().unwrap();
    let error: serde_json::Value = serde_json::from_str(&text(&output).0).unwrap();
    assert_eq!(error["error"]["code"], "not_found");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("peer-1") && message.contains("data dir"), "names the object and where: {message}");
    assert!(!root.path().join("liqo-auth-data/join-token.key").exists(), "a dry run rotated no key");

    let output = shell(root.path(), "liqo-auth version -o json").output().unwrap();
    let version: serde_json::Value = serde_json::from_str(&text(&output).0).unwrap();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert!(version["gitCommit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(version["supportedLiqoVersions"].as_str().unwrap().contains("v0.10.3"));
}

#[test]
fn ca_hash_prints_the_pin_serve_logs() {
    let root = tempfile::tempdir().unwrap();
    bin_dir(root.path());
    let log = std::fs::File::create(root.path().join("serve.log")).unwrap();
    let provider = Provider(
        shell(
            root.path(),
            "exec liqo-auth serve --backend local --enable-tls --address 127.0.0.1:0 --metrics-address off",
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap(),
    );
    let record = root.path().join("liqo-auth-data/serving.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !record.exists() {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let recorded: serde_json::Value = serde_json::from_str(&read(&record)).unwrap();
    let pin = recorded["caHash"].as_str().unwrap().to_owned();
    let url = recorded["authUrl"].as_str().unwrap().to_owned();
    let from_file = shell(root.path(), "liqo-auth ca-hash --file liqo-auth-data/tls.crt").output().unwrap();
    assert_eq!(text(&from_file).0.trim(), pin);
    let from_url = shell(root.path(), &format!("liqo-auth ca-hash --url {url} -o json")).output().unwrap();
    let document: serde_json::Value = serde_json::from_str(&text(&from_url).0).expect("JSON");
    assert_eq!(document["caHash"], pin.as_str());
    drop(provider);
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
