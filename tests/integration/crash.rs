//! Durability of the local backend: the real binary is killed with SIGKILL in the middle of a
//! burst of first issuances; after a restart every peer that got 202 gets the very same
//! certificate back, the data dir has no temp files left and every record reads back.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liqo_auth::client::transport::{AuthClient, ServerTrust};

use crate::support::app::certificate_body;
use crate::support::pki::{self, KeyType};

/// The binary serving plain HTTP on a free loopback port, and that port's URL.
fn spawn_server(data_dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_liqo-auth"))
        .args(["serve", "--backend", "local", "--address", "127.0.0.1:0", "--metrics-address", "off"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start liqo-auth serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads the log until the listen line, then keeps draining it so the server never blocks.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("serving plain HTTP on ").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr);
                }
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).expect("the server announces its address");
    (child, format!("http://{addr}"))
}

fn client(url: &str) -> AuthClient {
    AuthClient::new(url, ServerTrust::InsecureSkipVerify, Duration::from_secs(10)).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_peer_answered_202_before_a_kill_9_keeps_its_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let (mut child, url) = spawn_server(&data_dir);
    let token = std::fs::read_to_string(data_dir.join("token")).unwrap();
    let token = token.trim().to_owned();

    // 16 clients issue without pause; the server dies once 60 have been answered, while the
    // others are in flight.
    let answered: Arc<Mutex<HashMap<String, (String, String)>>> = Arc::default();
    let (killed_tx, killed_rx) = tokio::sync::watch::channel(false);
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (url, token, answered, killed) = (url.clone(), token.clone(), answered.clone(), killed_rx.clone());
            tokio::spawn(async move {
                let client = client(&url);
                for i in 0.. {
                    if *killed.borrow() {
                        break;
                    }
                    let id = format!("peer-{w}-{i}");
                    let csr = pki::liqo_csr(&pki::key(KeyType::P256), &id);
                    let body = certificate_body(&id, "rome", &token, &csr, None);
                    match client.post("/identity/certificate", body.clone().into_bytes(), "application/json").await {
                        Ok(answer) if answer.status == 202 => {
                            let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
                            let cert = json["certificate"].as_str().unwrap().to_owned();
                            answered.lock().unwrap().insert(id, (body, cert));
                        }
                        Ok(answer) => panic!("{id}: unexpected status {}", answer.status),
                        // The kill: connections refused or cut.
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while answered.lock().unwrap().len() < 60 {
        assert!(tokio::time::Instant::now() < deadline, "the burst made no progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    killed_tx.send(true).unwrap();
    for worker in workers {
        worker.await.unwrap();
    }
    let answered = std::mem::take(&mut *answered.lock().unwrap());
    assert!(answered.len() >= 60);

    let (mut child, url) = spawn_server(&data_dir);
    let client = client(&url);
    for (id, (body, cert)) in &answered {
        let again = client.post("/identity/certificate", body.clone().into_bytes(), "application/json").await.unwrap();
        assert_eq!(again.status, 202, "{id}: {}", String::from_utf8_lossy(&again.body));
        let json: serde_json::Value = serde_json::from_slice(&again.body).unwrap();
        assert_eq!(json["certificate"].as_str().unwrap(), cert, "{id} got another certificate after the crash");
    }
    let _ = child.kill();
    child.wait().unwrap();

    for dir in [data_dir.clone(), data_dir.join("peers")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(!name.contains(".tmp-"), "temp file left in {}: {name}", dir.display());
        }
    }
    let output = Command::new(env!("CARGO_BIN_EXE_liqo-auth"))
        .args(["tenant", "list", "--backend", "local", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "every record reads back: {}", String::from_utf8_lossy(&output.stderr));
    for id in answered.keys() {
        assert!(listing.contains(id.as_str()), "tenant list misses {id}");
    }
}
