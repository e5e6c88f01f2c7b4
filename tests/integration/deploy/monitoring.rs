//! deploy/monitoring: the PrometheusRule passes `promtool check rules` and its unit tests
//! (`promtool test rules`, deploy/monitoring/tests/alerts.test.yaml, one firing case per
//! alert); every metric the rules and the Grafana dashboard query is one the service's
//! /metrics really exports; the ServiceMonitor reaches the admin port through its Service.
//!
//! promtool comes from Debian's `prometheus` package (.ci/run extracts it). Without it the
//! promtool test fails under `LIQO_AUTH_REQUIRE_ALL_TESTS=1` and otherwise prints `SKIPPED`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_yaml::Value;

use super::{deploy_dir, find_on_path, render};
use crate::support::app::certificate_body;
use crate::support::pki::{self, KeyType};
use crate::support::server::TestServer;

/// Metrics the rules use that another exporter provides (kube-state-metrics).
const EXTERNAL_METRICS: [&str; 1] = ["kube_deployment_status_replicas_available"];
/// The `job` label Prometheus Operator gives the scraped series: the metrics Service's name.
const JOB: &str = "liqo-auth-metrics";

#[test]
fn promtool_checks_the_rules_and_every_alert_fires_in_its_unit_test() {
    let Some(promtool) = find_on_path("promtool") else {
        if crate::support::all_tests_required() {
            panic!(
                "promtool not found on PATH, and LIQO_AUTH_REQUIRE_ALL_TESTS=1 forbids skipping: install Debian's \
                 prometheus package (.ci/run extracts promtool from it) or unset LIQO_AUTH_REQUIRE_ALL_TESTS"
            );
        }
        let _ = writeln!(std::io::stderr(), "SKIPPED: promtool not found, alert rules not checked");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), serde_yaml::to_string(&rule_groups()).unwrap()).unwrap();
    std::fs::copy(monitoring_dir().join("tests/alerts.test.yaml"), dir.path().join("alerts.test.yaml")).unwrap();
    for args in [["check", "rules", "rules.yaml"], ["test", "rules", "alerts.test.yaml"]] {
        let (ok, output) = run_bounded(&promtool, &args, dir.path(), Duration::from_secs(60));
        assert!(ok, "promtool {} failed:\n{output}", args.join(" "));
        assert!(output.contains("SUCCESS"), "promtool {}: {output}", args.join(" "));
    }
}

#[test]
fn every_alert_has_a_unit_test_that_expects_it_to_fire() {
    let alerts: BTreeSet<String> = rules().iter().filter_map(|r| r["alert"].as_str().map(str::to_owned)).collect();
    assert_eq!(alerts.len(), 4, "{alerts:?}");
    let tests: Value = read_yaml(&monitoring_dir().join("tests/alerts.test.yaml"));
    let firing: BTreeSet<String> = tests["tests"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|t| t["alert_rule_test"].as_sequence().cloned().unwrap_or_default())
        .filter(|case| case["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()))
        .filter_map(|case| case["alertname"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(firing, alerts, "each alert fires in a unit test");
    for rule in rules() {
        let expr = rule["expr"].as_str().unwrap_or_default();
        assert!(
            EXTERNAL_METRICS.iter().any(|m| expr.contains(m)) || expr.contains(&format!("job=\"{JOB}\"")),
            "the rule selects the ServiceMonitor's job: {expr}"
        );
    }
}

#[tokio::test]
async fn every_metric_in_the_rules_and_the_dashboard_is_exported_by_the_service() {
    let server = TestServer::start(&[]).await;
    // Traffic that gives every family a sample (empty families are not exposed): an
    // issuance (requests, issuance result, signer duration) and a bad token.
    let csr = pki::liqo_csr(&pki::key(KeyType::P256), "peer-1");
    let good = certificate_body("peer-1", "rome", &server.token(), &csr, None);
    assert!(crate::support::server::http1_request(server.addr, "POST", "/identity/certificate", &good)
        .await
        .starts_with("HTTP/1.1 202"));
    let bad = certificate_body("peer-2", "milan", "not-the-token", &csr, None);
    assert!(crate::support::server::http1_request(server.addr, "POST", "/identity/certificate", &bad)
        .await
        .starts_with("HTTP/1.1 401"));
    let exported = exported_metric_names(&http_get(server.admin_addr.expect("admin listener"), "/metrics").await);

    let mut queried = BTreeSet::new();
    for rule in rules() {
        queried.extend(metric_names(rule["expr"].as_str().unwrap_or_default()));
    }
    let dashboard = dashboard();
    for expr in dashboard_expressions(&dashboard) {
        queried.extend(metric_names(&expr));
    }
    assert!(queried.len() >= 8, "found the queries: {queried:?}");
    let missing: Vec<&String> =
        queried.iter().filter(|m| !exported.contains(*m) && !EXTERNAL_METRICS.contains(&m.as_str())).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?} (exported: {exported:?})");
}

#[test]
fn the_dashboard_is_grafana_json_over_a_datasource_variable() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "liqo-auth");
    let variables: Vec<&str> =
        dashboard["templating"]["list"].as_array().into_iter().flatten().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(variables, ["datasource", "namespace"]);
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(ids.insert(panel["id"].as_i64().expect("panel id")), "unique panel ids");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            assert!(expr.contains("namespace=\"$namespace\""), "scoped to the chosen namespace: {expr}");
        }
    }
}

#[test]
fn the_service_monitor_scrapes_the_admin_port_of_the_deployment_pods() {
    let Some(base) = render("base") else { return };
    let Some(yaml) = super::kustomize_text("monitoring") else { return };
    let objects: Vec<Value> =
        serde_yaml::Deserializer::from_str(&yaml).map(|d| Value::deserialize(d).unwrap()).collect();
    let find = |kind: &str| {
        objects.iter().find(|o| o["kind"] == kind).unwrap_or_else(|| panic!("deploy/monitoring renders a {kind}"))
    };
    let (service, monitor) = (find("Service"), find("ServiceMonitor"));
    assert_eq!(service["metadata"]["name"].as_str(), Some(JOB), "the rules' job label is this Service");
    assert_eq!(service["metadata"]["namespace"], "liqo");
    let labels = service["metadata"]["labels"].as_mapping().expect("Service labels");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_mapping().expect("ServiceMonitor selector") {
        assert_eq!(labels.get(key), Some(value), "the ServiceMonitor selects the metrics Service");
    }
    let port = &service["spec"]["ports"][0];
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], port["name"]);
    let target = port["targetPort"].as_str().expect("a named target port");
    let container = base.container();
    let number = super::container_port(
        container,
        &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(target.to_owned()),
    );
    assert_eq!(number, 9090, "the admin listener");
    let pod_labels = base.deployment().spec.as_ref().and_then(|s| s.template.metadata.as_ref()?.labels.clone());
    let pod_labels = pod_labels.expect("pod labels");
    for (key, value) in service["spec"]["selector"].as_mapping().expect("Service selector") {
        let (key, value) = (key.as_str().unwrap(), value.as_str().unwrap());
        assert_eq!(pod_labels.get(key).map(String::as_str), Some(value), "the Service selects the pods");
    }
    let dashboard = find("ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = dashboard["data"]["dashboard.json"].as_str().expect("the dashboard in the ConfigMap");
    assert_eq!(serde_json::from_str::<serde_json::Value>(json).unwrap(), self::dashboard());
}

use serde::Deserialize as _;

fn monitoring_dir() -> PathBuf {
    deploy_dir().join("monitoring")
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The PrometheusRule's `spec` (its `groups`): what promtool reads as a rule file.
fn rule_groups() -> Value {
    let rule = read_yaml(&monitoring_dir().join("prometheusrule.yaml"));
    assert_eq!(rule["kind"], "PrometheusRule");
    rule["spec"].clone()
}

fn rules() -> Vec<Value> {
    rule_groups()["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .collect()
}

fn dashboard() -> serde_json::Value {
    let path = monitoring_dir().join("dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard.json is JSON")
}

fn dashboard_expressions(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.extend(target["expr"].as_str().map(str::to_owned));
        }
    }
    // Grafana's `label_values(<selector>, <label>)`: the selector is PromQL, the label is not.
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let definition = variable["definition"].as_str().unwrap_or_default();
        if let Some(inner) = definition.strip_prefix("label_values(").and_then(|d| d.strip_suffix(')')) {
            out.push(inner.rsplit_once(',').map_or(inner, |(selector, _)| selector).to_owned());
        }
    }
    out
}

/// The metric names a PromQL expression selects: identifiers outside label matchers, strings,
/// ranges and grouping clauses that are neither functions, keywords nor numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 5] = ["and", "or", "unless", "bool", "offset"];
    const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    // Drop strings, `{...}` matchers and `[...]` ranges.
    let mut text = String::new();
    let (mut depth, mut in_string) = (0, false);
    for c in expr.chars() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth > 0 => {}
            _ => text.push(c),
        }
    }
    // Words and single punctuation characters.
    let mut tokens: Vec<String> = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '.' {
            word.push(c);
        } else {
            if !word.is_empty() {
                tokens.push(std::mem::take(&mut word));
            }
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i].as_str();
        let next = tokens.get(i + 1).map(String::as_str);
        let is_word = token.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        let aggregation = next.is_some_and(|n| GROUPING.contains(&n));
        if GROUPING.contains(&token) && next == Some("(") {
            // Skip the label list.
            while i < tokens.len() && tokens[i] != ")" {
                i += 1;
            }
        } else if is_word
            && next != Some("(")
            && !aggregation
            && !KEYWORDS.contains(&token)
            && !GROUPING.contains(&token)
        {
            names.insert(token.to_owned());
        }
        i += 1;
    }
    names
}

/// Every sample name the exposition carries, and the per-type names of each `# TYPE` line.
fn exported_metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.to_owned());
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// One plain-HTTP GET that must answer 200; the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let response = crate::support::server::http1_request(addr, "GET", path, "").await;
    assert!(response.starts_with("HTTP/1.1 200"), "GET {path}: {response}");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

/// Runs `program args` in `dir`, killed after `limit`; (success, stdout + stderr).
fn run_bounded(program: &Path, args: &[&str], dir: &Path, limit: Duration) -> (bool, String) {
    let output_path = dir.join("promtool.out");
    let file = std::fs::File::create(&output_path).unwrap();
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&output_path).unwrap_or_default();
    match status {
        Some(status) => (status.success(), output),
        None => (false, format!("killed after {limit:?}\n{output}")),
    }
}

#[test]
fn metric_names_skip_functions_labels_and_keywords() {
    let names = metric_names(
        r#"sum by (namespace, le) (rate(a_total{job="x",route="/b"}[5m])) / on (namespace) group_left b_seconds > 0.05 and c - time() < 14 * 86400"#,
    );
    assert_eq!(names, ["a_total", "b_seconds", "c"].into_iter().map(str::to_owned).collect());
}
