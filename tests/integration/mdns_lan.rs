//! A real mDNS advertisement and a real browse over a network: two network namespaces joined by
//! a veth pair, `liqo-auth serve --mdns-advertise` in one, `liqo-auth discover` in the other.
//!
//! NEEDS ROOT AND IPROUTE2 (`ip netns`, `ip link`): without them the test fails when
//! `LIQO_AUTH_REQUIRE_ALL_TESTS=1` (as `.ci/run` sets it); otherwise it prints `SKIPPED: ...`
//! and passes without asserting. Everything it creates has a per-run name (suffix = PID) and is
//! removed by a drop guard, also when an assertion fails. The addresses (10.213.0.1/24 and
//! 10.213.0.2/24) exist only inside the two namespaces, which have no route anywhere else, so no
//! packet of the test leaves them.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const IP: &str = "/usr/sbin/ip";
const SERVER_ADDRESS: &str = "10.213.0.1";
const CLIENT_ADDRESS: &str = "10.213.0.2";
const PORT: u16 = 5443;

/// Two namespaces joined by a veth pair, and the processes started in them; all torn down on drop.
struct Lab {
    ns_server: String,
    ns_client: String,
    if_server: String,
    if_client: String,
    children: Vec<Child>,
}

impl Lab {
    /// Builds the lab, or says why it cannot be built here.
    fn create() -> Result<Self, String> {
        if !Path::new(IP).exists() {
            return Err(format!("{IP} not found"));
        }
        let uid = Command::new("id").arg("-u").output().map_err(|e| format!("running id -u: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not running as root".into());
        }
        let pid = std::process::id();
        let lab = Lab {
            ns_server: format!("liqoauth-srv-{pid}"),
            ns_client: format!("liqoauth-cli-{pid}"),
            // At most 15 characters, and not a pod-network prefix: discover's automatic
            // interface selection must pick the client end.
            if_server: format!("lqa{pid}"),
            if_client: format!("lqb{pid}"),
            children: Vec::new(),
        };
        // From here on, `lab` is dropped (and cleans up) on every early return.
        ip(&["netns", "add", &lab.ns_server])?;
        ip(&["netns", "add", &lab.ns_client])?;
        ip(&["link", "add", &lab.if_server, "type", "veth", "peer", "name", &lab.if_client])?;
        ip(&["link", "set", &lab.if_server, "netns", &lab.ns_server])?;
        ip(&["link", "set", &lab.if_client, "netns", &lab.ns_client])?;
        for (ns, interface, address) in
            [(&lab.ns_server, &lab.if_server, SERVER_ADDRESS), (&lab.ns_client, &lab.if_client, CLIENT_ADDRESS)]
        {
            ip(&["-n", ns, "addr", "add", &format!("{address}/24"), "dev", interface])?;
            ip(&["-n", ns, "link", "set", interface, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    /// `ip netns exec NS liqo-auth ARGS...` (`ip netns exec` execs, so the child is liqo-auth).
    fn liqo_auth(&self, ns: &str, args: &[&str]) -> Command {
        let mut command = Command::new(IP);
        command
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_liqo-auth")])
            .args(args)
            .env("LIQO_AUTH_LOG_LEVEL", "debug")
            .stdin(Stdio::null());
        command
    }

    /// Waits for the child with process ID `pid`, killing it if it outlives `within`.
    fn wait(&mut self, pid: u32, within: Duration) -> ExitStatus {
        let index = self.children.iter().position(|c| c.id() == pid).expect("a child of this lab");
        let mut child = self.children.remove(index);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("process {pid} did not exit within {within:?}");
    }

    /// Waits until `log` contains `needle`; fails at once if the child `pid` exits first.
    fn wait_for_log(&mut self, pid: u32, log: &Path, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if read(log).contains(needle) {
                return;
            }
            let child = self.children.iter_mut().find(|c| c.id() == pid).expect("a child of this lab");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("exited with {status} before logging {needle:?}:\n{}", read(log));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{needle:?} not logged within {within:?}:\n{}", read(log));
    }

    /// Runs `discover` in the client namespace and returns its exit code, JSON and stderr.
    fn discover(&self, timeout: &str) -> (Output, serde_json::Value) {
        let output = self
            .liqo_auth(
                &self.ns_client,
                &["discover", "--timeout", timeout, "--output", "json", "--insecure-skip-tls-verify"],
            )
            .output()
            .expect("run liqo-auth discover");
        let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "discover printed no JSON ({e}); stdout: {}\nstderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output, json)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting a namespace destroys the veth end inside it, and so the pair. The link is
        // deleted by name too in case it never left the root namespace.
        let _ = quiet_ip(&["link", "del", &self.if_server]);
        let _ = quiet_ip(&["netns", "del", &self.ns_server]);
        let _ = quiet_ip(&["netns", "del", &self.ns_client]);
    }
}

#[test]
fn discover_finds_an_advertising_server_in_another_namespace_and_forgets_it_after_goodbye() {
    let mut lab = match Lab::create() {
        Ok(lab) => lab,
        Err(why) if crate::support::all_tests_required() => panic!(
            "cannot build the veth lab ({why}): this test needs root and iproute2 (ip netns), and \
             LIQO_AUTH_REQUIRE_ALL_TESTS=1 forbids skipping it"
        ),
        Err(why) => {
            println!("SKIPPED: needs root and iproute2 (ip netns) to build a veth lab: {why}");
            return;
        }
    };
    let data = tempfile::tempdir().expect("temp dir");
    let cluster_id = format!("4f6c2a10-9b7e-4d3a-8c55-{:012x}", std::process::id());
    let server_log = data.path().join("server.log");
    let cert = data.path().join("cert.pem");
    let key = data.path().join("key.pem");
    let address = format!("{SERVER_ADDRESS}:{PORT}");
    let server = lab
        .liqo_auth(
            &lab.ns_server,
            &[
                "serve",
                "--backend",
                "local",
                "--data-dir",
                path(data.path()),
                "--cert-path",
                path(&cert),
                "--key-path",
                path(&key),
                "--generate-missing",
                "--address",
                &address,
                "--enable-tls",
                "--cluster-id",
                &cluster_id,
                "--cluster-name",
                "lab-a",
                "--mdns-advertise",
                "--mdns-interface",
                &lab.if_server,
            ],
        )
        .stdout(Stdio::null())
        .stderr(File::create(&server_log).expect("server log"))
        .spawn()
        .expect("start liqo-auth serve");
    let server_pid = server.id();
    lab.children.push(server);
    lab.wait_for_log(server_pid, &server_log, "advertising", Duration::from_secs(30));

    // The service is probed for name conflicts before it is announced: allow a retry.
    let mut found = serde_json::Value::Null;
    for _ in 0..3 {
        let (output, json) = lab.discover("3s");
        assert!(output.status.success(), "discover failed: {output:?}");
        if json.as_array().is_some_and(|a| !a.is_empty()) {
            found = json;
            break;
        }
    }
    let entries = found
        .as_array()
        .unwrap_or_else(|| panic!("discover never found the server; server log:\n{}", read(&server_log)));
    assert_eq!(entries.len(), 1, "{found:#}");
    let entry = &entries[0];
    assert_eq!(entry["cluster_id"], cluster_id.as_str(), "{entry:#}");
    assert_eq!(entry["cluster_name"], "lab-a", "{entry:#}");
    assert_eq!(entry["auth_url"], format!("https://{SERVER_ADDRESS}:{PORT}"), "{entry:#}");
    assert_eq!(entry["reachable"], true, "{entry:#}");
    let pin = entry["ca_hash"].as_str().expect("a TLS pin");
    assert!(pin.starts_with("sha256:") && pin.len() == 71, "{pin}");
    assert!(
        read(&server_log).contains(&format!("--ca-hash {pin}")),
        "the pin read over the network is the one the server logs at start"
    );
    assert_eq!(
        entry["peer_command"],
        format!("liqo-auth peer --auth-url https://{SERVER_ADDRESS}:{PORT} --token-file TOKEN_FILE --ca-hash {pin}")
    );

    // A browse that is running when the server stops must drop the entry on the goodbye packet,
    // not keep it cached for the record TTL (two minutes).
    let watcher_out = data.path().join("watcher.json");
    let watcher_err = data.path().join("watcher.log");
    let watcher = lab
        .liqo_auth(&lab.ns_client, &["discover", "--timeout", "8s", "--output", "json", "--insecure-skip-tls-verify"])
        .stdout(File::create(&watcher_out).expect("watcher output"))
        .stderr(File::create(&watcher_err).expect("watcher log"))
        .spawn()
        .expect("start the watching discover");
    let watcher_pid = watcher.id();
    lab.children.push(watcher);
    std::thread::sleep(Duration::from_secs(4));
    let status = Command::new("kill").args(["-TERM", &server_pid.to_string()]).status().expect("send SIGTERM");
    assert!(status.success());
    let exit = lab.wait(server_pid, Duration::from_secs(20));
    assert!(exit.success(), "server exit: {exit:?}");
    let log = read(&server_log);
    assert!(log.contains("withdrew the mDNS advertisement"), "server log:\n{log}");
    let exit = lab.wait(watcher_pid, Duration::from_secs(30));
    assert!(exit.success(), "watching discover: {exit:?}");
    let watched: serde_json::Value =
        serde_json::from_str(&read(&watcher_out)).unwrap_or_else(|e| panic!("watching discover printed no JSON: {e}"));
    assert_eq!(
        watched,
        serde_json::json!([]),
        "the running browse kept the entry after the goodbye; its log:\n{}",
        read(&watcher_err)
    );

    let (output, after) = lab.discover("3s");
    assert!(output.status.success());
    assert_eq!(after, serde_json::json!([]), "still listed after shutdown");
    assert!(String::from_utf8_lossy(&output.stderr).contains("no liqo-auth service found on the LAN"), "{output:?}");
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new(IP).args(args).output().map_err(|e| format!("running ip {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

fn quiet_ip(args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    Command::new(IP).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
