//! DNS discovery against a real DNS server: dnsmasq, started by each test on 127.0.0.1 with a
//! free port, serves a zone in the layout of Liqo's WAN discovery (PTR per cluster under the
//! domain, SRV per target, optional TXT), and `liqo-auth discover --dns-domain` (the binary)
//! finds real liqo-auth servers (the service on 127.0.0.1:0) through it.
//!
//! NEEDS DNSMASQ (Debian `dnsmasq-base`, which `.ci/run` installs): without it the tests fail when
//! `LIQO_AUTH_REQUIRE_ALL_TESTS=1`; otherwise they print `SKIPPED: ...` and pass without
//! asserting. dnsmasq reads no configuration file, no hosts file and no resolv.conf, answers
//! only for the test's own domain (`--local`), writes no pid file, and is killed when the test
//! ends, also when an assertion fails.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::server::TestServer;

/// A running dnsmasq serving a fixed set of records.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq authoritative for `domain` with `records` (dnsmasq options such as
    /// `--srv-host=...`). `Err` only when the binary is missing.
    fn start(domain: &str, records: &[String]) -> Result<Self, String> {
        let binary = dnsmasq_binary().ok_or("dnsmasq is not installed (Debian package dnsmasq-base)")?;
        // The port is free when chosen but may be taken before dnsmasq binds it: retry.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let log = dir.path().join("dnsmasq.log");
            let port = free_port();
            let child = Command::new(&binary)
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--pid-file=",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--log-queries",
                    "--log-facility=-",
                    "--local-ttl=60",
                    &format!("--port={port}"),
                    &format!("--local=/{domain}/"),
                ])
                .args(records)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("dnsmasq log"))
                .spawn()
                .map_err(|e| format!("starting {}: {e}", binary.display()))?;
            let mut dnsmasq = Self { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), log, _dir: dir };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                // dnsmasq binds its sockets before it logs that it started.
                if dnsmasq.log_text().contains("started, version") {
                    return Ok(dnsmasq);
                }
                if let Ok(Some(status)) = dnsmasq.child.try_wait() {
                    let text = dnsmasq.log_text();
                    assert!(text.contains("in use"), "dnsmasq exited with {status}:\n{text}");
                    break;
                }
                assert!(Instant::now() < deadline, "dnsmasq did not start within 10s:\n{}", dnsmasq.log_text());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("no free port for dnsmasq after 5 attempts")
    }

    fn server(&self) -> String {
        self.addr.to_string()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `liqo-auth discover ARGS... --output json` (the binary) printed.
struct Discovered {
    code: Option<i32>,
    json: serde_json::Value,
    stderr: String,
}

impl Discovered {
    fn run(args: &[&str]) -> Self {
        let argv: Vec<&str> =
            ["discover"].into_iter().chain(args.iter().copied()).chain(["--output", "json"]).collect();
        let (code, stdout, stderr) = run_binary(&argv);
        let json = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("discover printed no JSON ({e}); stdout: {stdout}\nstderr: {stderr}"));
        Self { code, json, stderr }
    }

    /// The entry found under PTR target `name`.
    fn entry(&self, name: &str) -> &serde_json::Value {
        self.json
            .as_array()
            .expect("a JSON array")
            .iter()
            .find(|e| e["dns_name"] == name)
            .unwrap_or_else(|| panic!("no entry for {name} in {:#}\nstderr: {}", self.json, self.stderr))
    }
}

/// Runs `body` with dnsmasq serving `records` for `domain`, or skips (fails under
/// LIQO_AUTH_REQUIRE_ALL_TESTS=1) when dnsmasq is missing.
fn with_dnsmasq(domain: &str, records: &[String]) -> Option<Dnsmasq> {
    match Dnsmasq::start(domain, records) {
        Ok(dnsmasq) => Some(dnsmasq),
        Err(why) if crate::support::all_tests_required() => {
            panic!("{why}: LIQO_AUTH_REQUIRE_ALL_TESTS=1 forbids skipping the DNS discovery tests")
        }
        Err(why) => {
            println!("SKIPPED: {why}");
            None
        }
    }
}

async fn provider(cluster_id: &str, name: &str, host: &str) -> TestServer {
    TestServer::start(&["--enable-tls", "--cluster-id", cluster_id, "--cluster-name", name, "--tls-san", host]).await
}

/// Runs the blocking binary off the runtime, so the in-process servers keep answering.
async fn discover(args: Vec<String>) -> Discovered {
    tokio::task::spawn_blocking(move || Discovered::run(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .expect("discover thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_finds_registered_providers_and_reports_each_broken_target_by_step() {
    let id1 = format!("0d6c2a10-9b7e-4d3a-8c55-{:012x}", std::process::id());
    let id2 = format!("1e7d3b21-9b7e-4d3a-8c55-{:012x}", std::process::id());
    let p1 = provider(&id1, "alpha", "auth.p1.liqo.test").await;
    let p2 = provider(&id2, "beta", "auth.p2.liqo.test").await;
    let (pin1, pin2) = (p1.pin.clone().expect("TLS pin"), p2.pin.clone().expect("TLS pin"));
    let closed = closed_port();
    let domain = "liqo.test";
    let records: Vec<String> = [
        // One PTR per registered cluster, as in the reference layout.
        "--ptr-record=liqo.test,p1.liqo.test".to_owned(),
        "--ptr-record=liqo.test,p2.liqo.test".to_owned(),
        "--ptr-record=liqo.test,p3.liqo.test".to_owned(),
        "--ptr-record=liqo.test,p4.liqo.test".to_owned(),
        "--ptr-record=liqo.test,p5.liqo.test".to_owned(),
        // Two providers with SRV, address and TXT (cluster ID, name, pin).
        format!("--srv-host=p1.liqo.test,auth.p1.liqo.test,{},0,0", p1.addr.port()),
        "--host-record=auth.p1.liqo.test,127.0.0.1".to_owned(),
        format!("--txt-record=p1.liqo.test,clusterID={id1},clusterName=alpha,pin={pin1}"),
        format!("--srv-host=p2.liqo.test,auth.p2.liqo.test,{},0,0", p2.addr.port()),
        "--host-record=auth.p2.liqo.test,127.0.0.1".to_owned(),
        format!("--txt-record=p2.liqo.test,clusterID={id2},pin={pin2}"),
        // p3: a target with a TXT record but no SRV.
        "--txt-record=p3.liqo.test,clusterName=gamma".to_owned(),
        // p4: an SRV whose host has no address.
        "--srv-host=p4.liqo.test,gone.liqo.test,443,0,0".to_owned(),
        // p5: an SRV to a port nobody listens on.
        format!("--srv-host=p5.liqo.test,auth.p5.liqo.test,{},0,0", closed.port()),
        "--host-record=auth.p5.liqo.test,127.0.0.1".to_owned(),
    ]
    .into();
    let Some(dns) = with_dnsmasq(domain, &records) else { return };

    // No trust flag: each provider is verified against the pin its TXT record publishes.
    let found = discover(vec!["--dns-domain".into(), domain.into(), "--dns-server".into(), dns.server()]).await;
    assert_eq!(found.code, Some(2), "broken targets make the result partial; stderr:\n{}", found.stderr);
    assert_eq!(found.json.as_array().expect("array").len(), 5, "{:#}", found.json);

    for (name, id, cluster_name, pin, server) in
        [("p1.liqo.test", &id1, "alpha", &pin1, &p1), ("p2.liqo.test", &id2, "beta", &pin2, &p2)]
    {
        let entry = found.entry(name);
        let url = format!("https://auth.{name}:{}", server.addr.port());
        assert_eq!(entry["source"], "dns", "{entry:#}");
        assert_eq!(entry["reachable"], true, "{entry:#}\ndnsmasq:\n{}", dns.log_text());
        assert_eq!(entry["cluster_id"], id.as_str(), "{entry:#}");
        assert_eq!(entry["cluster_name"], cluster_name, "/ids gives the name: {entry:#}");
        assert_eq!(entry["auth_url"], url.as_str(), "{entry:#}");
        assert_eq!(entry["addresses"], serde_json::json!(["127.0.0.1"]), "{entry:#}");
        assert_eq!(entry["ca_hash"], pin.as_str(), "{entry:#}");
        assert_eq!(entry["dns_pin"], pin.as_str(), "{entry:#}");
        assert_eq!(entry["ttl_seconds"], 60, "dnsmasq's --local-ttl: {entry:#}");
        let detail = entry["detail"].as_str().expect("detail");
        assert!(detail.starts_with("GET /ids answered 200"), "{detail}");
        assert!(!detail.contains("not the announced one"), "/ids confirms the TXT cluster ID: {detail}");
        assert!(detail.contains("matches the pin in DNS"), "{detail}");
        assert_eq!(
            entry["peer_command"],
            format!("liqo-auth peer --auth-url {url} --token-file TOKEN_FILE --ca-hash {pin}").as_str()
        );
    }

    let no_srv = found.entry("p3.liqo.test");
    assert_eq!((&no_srv["reachable"], &no_srv["failed_step"]), (&false.into(), &"srv".into()), "{no_srv:#}");
    assert_eq!(no_srv["detail"], "no SRV record for p3.liqo.test: the name has other records but no SRV");

    let no_address = found.entry("p4.liqo.test");
    assert_eq!(no_address["failed_step"], "address", "{no_address:#}");
    assert_eq!(
        no_address["detail"],
        "SRV host gone.liqo.test of p4.liqo.test does not resolve: the name does not exist (NXDOMAIN)"
    );

    let unreachable = found.entry("p5.liqo.test");
    assert_eq!(unreachable["failed_step"], "ids", "{unreachable:#}");
    assert_eq!(unreachable["auth_url"], format!("https://auth.p5.liqo.test:{}", closed.port()).as_str());
    assert!(unreachable["detail"].as_str().expect("detail").contains("refused"), "{unreachable:#}");
    assert_eq!(unreachable["peer_command"], serde_json::Value::Null);

    // The DNS server was asked for each step of the layout.
    let log = dns.log_text();
    for query in
        ["query[PTR] liqo.test", "query[SRV] p1.liqo.test", "query[TXT] p1.liqo.test", "query[A] auth.p1.liqo.test"]
    {
        assert!(log.contains(query), "dnsmasq never saw {query:?}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_zone_without_txt_records_still_works() {
    let id = format!("2f8e4c32-9b7e-4d3a-8c55-{:012x}", std::process::id());
    let server = provider(&id, "delta", "auth.q1.wan.test").await;
    let pin = server.pin.clone().expect("TLS pin");
    let records = vec![
        "--ptr-record=wan.test,q1.wan.test".to_owned(),
        format!("--srv-host=q1.wan.test,auth.q1.wan.test,{},0,0", server.addr.port()),
        "--host-record=auth.q1.wan.test,127.0.0.1".to_owned(),
    ];
    let Some(dns) = with_dnsmasq("wan.test", &records) else { return };

    let found = discover(vec![
        "--dns-domain".into(),
        "wan.test".into(),
        "--dns-server".into(),
        dns.server(),
        "--ca-hash".into(),
        pin.clone(),
    ])
    .await;
    assert_eq!(found.code, Some(0), "stderr:\n{}", found.stderr);
    let entry = found.entry("q1.wan.test");
    assert_eq!(entry["reachable"], true, "{entry:#}");
    assert_eq!(entry["cluster_id"], id.as_str(), "without TXT the cluster ID comes from /ids: {entry:#}");
    assert_eq!(entry["cluster_name"], "delta");
    assert_eq!(entry["dns_pin"], serde_json::Value::Null);
    assert_eq!(entry["detail"], "GET /ids answered 200");
    assert_eq!(
        entry["peer_command"],
        format!(
            "liqo-auth peer --auth-url https://auth.q1.wan.test:{} --token-file TOKEN_FILE --ca-hash {pin}",
            server.addr.port()
        )
        .as_str()
    );

    // Without a pin in DNS nor a trust flag, the self-signed certificate fails the system
    // roots, and the row says how to proceed.
    let unverified =
        discover(vec!["--dns-domain".into(), "wan.test".into(), "--dns-server".into(), dns.server()]).await;
    assert_eq!(unverified.code, Some(2), "stderr:\n{}", unverified.stderr);
    let entry = unverified.entry("q1.wan.test");
    assert_eq!(entry["failed_step"], "ids", "{entry:#}");
    assert!(entry["detail"].as_str().expect("detail").contains("--ca-hash"), "{entry:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_without_ptr_records_fails_and_the_other_searches_still_report() {
    let id = format!("3a9f5d43-9b7e-4d3a-8c55-{:012x}", std::process::id());
    let server = provider(&id, "epsilon", "auth.r1.ok.test").await;
    let records = vec![
        "--ptr-record=ok.test,r1.ok.test".to_owned(),
        format!("--srv-host=r1.ok.test,auth.r1.ok.test,{},0,0", server.addr.port()),
        "--host-record=auth.r1.ok.test,127.0.0.1".to_owned(),
        format!("--txt-record=r1.ok.test,pin={}", server.pin.clone().expect("TLS pin")),
        "--local=/empty.test/".to_owned(),
    ];
    let Some(dns) = with_dnsmasq("ok.test", &records) else { return };

    let missing_interface = format!("nonexistent{}", std::process::id() % 100_000);
    let found = discover(vec![
        "--dns-domain".into(),
        "ok.test,empty.test".into(),
        "--dns-server".into(),
        dns.server(),
        "--mdns".into(),
        "--mdns-interface".into(),
        missing_interface.clone(),
        "--timeout".into(),
        "1s".into(),
    ])
    .await;
    assert_eq!(found.code, Some(1), "a search that could not run fails the command: {}", found.stderr);
    assert_eq!(found.entry("r1.ok.test")["reachable"], true, "the good results are kept: {:#}", found.json);
    assert!(
        found.stderr.contains("error: DNS: no PTR record for empty.test at DNS server"),
        "stderr:\n{}",
        found.stderr
    );
    assert!(
        found.stderr.contains(&format!(
            "error: mDNS: no network interface to browse on: no interface that is up matches --mdns-interface {missing_interface}"
        )),
        "stderr:\n{}",
        found.stderr
    );

    // A DNS server that does not answer: a bounded wait, then the reason.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let started = Instant::now();
    let timed_out = discover(vec![
        "--dns-domain".into(),
        "ok.test".into(),
        "--dns-server".into(),
        silent.local_addr().expect("address").to_string(),
        "--dns-timeout".into(),
        "500ms".into(),
    ])
    .await;
    assert_eq!(timed_out.code, Some(1));
    assert_eq!(timed_out.json, serde_json::json!([]));
    assert!(timed_out.stderr.contains("looking up the PTR records of ok.test"), "{}", timed_out.stderr);
    assert!(timed_out.stderr.contains("no answer within 500ms"), "{}", timed_out.stderr);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_records_dns_records_prints_make_the_provider_discoverable() {
    let id = format!("4b0a6e54-9b7e-4d3a-8c55-{:012x}", std::process::id());
    let server = provider(&id, "zeta", "auth.zeta.example.test").await;
    let pin = server.pin.clone().expect("TLS pin");
    let data_dir = server.data_dir().to_str().expect("utf-8").to_owned();
    let advertised = format!("auth.zeta.example.test:{}", server.addr.port());
    let printed = run_binary(&[
        "dns-records",
        "--backend",
        "local",
        "--data-dir",
        &data_dir,
        "--domain",
        "example.test",
        "--advertise-auth-address",
        &advertised,
    ]);
    assert_eq!(printed.0, Some(0), "stderr:\n{}", printed.2);
    let zone = printed.1;
    let records: Vec<&str> = zone.lines().filter(|l| !l.starts_with(';')).collect();
    assert_eq!(
        records,
        [
            "example.test.       300 IN PTR  zeta.example.test.".to_owned(),
            format!("zeta.example.test.  300 IN SRV  0 0 {} auth.zeta.example.test.", server.addr.port()),
            format!("zeta.example.test.  300 IN TXT  \"clusterID={id}\" \"clusterName=zeta\" \"pin={pin}\""),
        ],
        "{zone}"
    );

    // Without --advertise-auth-address the SRV points where the running serve said it listens
    // (the auth URL it recorded in its data dir), with the same pin.
    let recorded =
        run_binary(&["dns-records", "--backend", "local", "--data-dir", &data_dir, "--domain", "example.test"]);
    assert_eq!(recorded.0, Some(0), "stderr:\n{}", recorded.2);
    let srv_port = format!(" IN SRV  0 0 {} ", server.addr.port());
    assert!(recorded.1.lines().any(|l| l.contains(&srv_port)), "{}", recorded.1);
    assert!(recorded.1.contains(&format!("\"pin={pin}\"")), "{}", recorded.1);

    // Published as printed (translated line by line into dnsmasq's options), plus the address
    // record of the advertised host, which the operator's zone already has.
    let mut options = zone_to_dnsmasq(&zone);
    options.push("--host-record=auth.zeta.example.test,127.0.0.1".to_owned());
    let Some(dns) = with_dnsmasq("example.test", &options) else { return };
    let found = discover(vec!["--dns-domain".into(), "example.test".into(), "--dns-server".into(), dns.server()]).await;
    assert_eq!(found.code, Some(0), "stderr:\n{}", found.stderr);
    let entry = found.entry("zeta.example.test");
    assert_eq!(entry["reachable"], true, "{entry:#}");
    assert_eq!(entry["cluster_id"], id.as_str());
    assert_eq!(entry["dns_pin"], pin.as_str());
    assert!(entry["detail"].as_str().expect("detail").contains("matches the pin in DNS"), "{entry:#}");
}

#[test]
fn mdns_discover_fails_when_no_interface_can_be_browsed() {
    let missing_interface = format!("nonexistent{}", std::process::id() % 100_000);
    let found = Discovered::run(&["--mdns-interface", &missing_interface, "--timeout", "1s"]);
    assert_eq!(found.code, Some(1), "stderr:\n{}", found.stderr);
    assert_eq!(found.json, serde_json::json!([]));
    assert!(
        found.stderr.contains(&format!(
            "error: mDNS: no network interface to browse on: no interface that is up matches --mdns-interface {missing_interface}"
        )),
        "stderr:\n{}",
        found.stderr
    );
    assert!(!found.stderr.contains("no liqo-auth service found"), "not an empty LAN: {}", found.stderr);
}

/// `liqo-auth ARGS...` (the binary): exit code, stdout, stderr; killed if it outlives 60 s.
fn run_binary(args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_liqo-auth"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LIQO_AUTH_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("stdout file"))
        .stderr(File::create(&err).expect("stderr file"))
        .spawn()
        .expect("run liqo-auth");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for liqo-auth") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("liqo-auth {args:?} did not exit within 60s; stderr:\n{}", read(&err));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), read(&out), read(&err))
}

/// The PTR, SRV, TXT and A lines of a zone file as dnsmasq options, so that a test serves
/// exactly what was printed. Panics on any other line.
fn zone_to_dnsmasq(zone: &str) -> Vec<String> {
    let bare = |name: &str| name.trim_end_matches('.').to_owned();
    zone.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with(';'))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (owner, class, kind, data) = (fields[0], fields[2], fields[3], &fields[4..]);
            assert_eq!(class, "IN", "{line}");
            match kind {
                "PTR" => format!("--ptr-record={},{}", bare(owner), bare(data[0])),
                "SRV" => format!("--srv-host={},{},{},{},{}", bare(owner), bare(data[3]), data[2], data[0], data[1]),
                "A" | "AAAA" => format!("--host-record={},{}", bare(owner), data[0]),
                "TXT" => {
                    let strings: Vec<&str> = data.iter().map(|s| s.trim_matches('"')).collect();
                    assert!(strings.iter().all(|s| !s.contains(',')), "dnsmasq splits on commas: {line}");
                    format!("--txt-record={},{}", bare(owner), strings.join(","))
                }
                other => panic!("unexpected record type {other} in {line}"),
            }
        })
        .collect()
}

fn dnsmasq_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join("dnsmasq"))
        .find(|candidate| candidate.is_file())
}

/// A UDP port free on 127.0.0.1 whose TCP twin is free too (dnsmasq binds both).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("listener address")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
