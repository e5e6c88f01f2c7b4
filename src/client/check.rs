//! `liqo-auth check`: walks the path a peering takes and reports one row per step, with the
//! likely cause and fix when a step fails.
//!
//! For the auth service: DNS resolution, TCP connect, TLS handshake (protocol, certificate
//! subject, SANs, expiry, pin match) and `GET /ids`; for the API server (optional): the same
//! network steps and an unauthenticated `GET /version`. The failures people actually hit are
//! recognised by name: connection refused versus filtered, plain HTTP answered on a TLS port and
//! TLS answered on a plain port (Ingress mistakes), an Ingress default certificate, a certificate
//! without SANs. When a step fails, the later steps of the same target are marked as skipped.
//!
//! The network work is done with the building blocks of [`super::transport`], so `check` sees
//! exactly what `peer` would see. Printing and exit codes happen only in [`execute`].

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::client::transport::{
    self, ChainRecorder, ConnectFailure, Deadline, Endpoint, ServerTrust, Sniffed, TlsFailure, TransportError,
};
use crate::client::Output;
use crate::error::error_chain;
use crate::pki;

/// What to check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Base URL of the liqo-auth service.
    pub auth_url: String,
    /// Kubernetes API server URL, checked too when given.
    pub api_server: Option<String>,
    /// How the auth service's certificate is verified.
    pub trust: ServerTrust,
    /// Time allowed for each step.
    pub timeout: Duration,
}

/// The result of a check: one row per step, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// The auth URL that was checked.
    pub auth_url: String,
    /// The API server URL that was checked, if any.
    pub api_server: Option<String>,
    /// The steps, auth service first.
    pub steps: Vec<CheckStep>,
}

/// One step of a check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckStep {
    /// What was checked, e.g. `auth: TCP connect`.
    pub name: String,
    /// Host, address or URL the step was about.
    pub target: String,
    /// Passed, failed, or skipped because an earlier step failed.
    pub status: StepStatus,
    /// `status == Pass`.
    pub ok: bool,
    /// Time the step took.
    pub duration_ms: u64,
    /// What was observed.
    pub detail: String,
    /// On failure: the likely cause.
    pub cause: Option<String>,
    /// On failure: what to do about it.
    pub fix: Option<String>,
}

/// Outcome of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// The step succeeded.
    Pass,
    /// The step failed; `cause` and `fix` are set.
    Fail,
    /// Not run because an earlier step for the same target failed.
    Skip,
}

/// Runs every step and never fails: failures are rows of the report.
pub async fn run_check(opts: CheckOptions) -> CheckReport {
    let mut steps = Vec::new();
    walk("auth", &opts.auth_url, &opts.trust, opts.timeout, Probe::Ids, &mut steps).await;
    if let Some(api_server) = &opts.api_server {
        // The API server's CA arrives with the identity (apiServerCA), so here it can only be
        // inspected, not verified.
        walk("api-server", api_server, &ServerTrust::InsecureSkipVerify, opts.timeout, Probe::Version, &mut steps)
            .await;
    }
    CheckReport { auth_url: opts.auth_url, api_server: opts.api_server, steps }
}

impl CheckReport {
    /// 0 when every step passed; 2 when the auth service passed and only the API server
    /// failed (peering gets an identity, using it will not work); 1 otherwise.
    pub fn exit_status(&self) -> u8 {
        use crate::output::{EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL};
        if self.passed() {
            return EXIT_OK;
        }
        let auth_passed =
            self.steps.iter().filter(|s| s.name.starts_with("auth:")).all(|s| s.status == StepStatus::Pass);
        let some_auth = self.steps.iter().any(|s| s.name.starts_with("auth:"));
        if some_auth && auth_passed {
            EXIT_PARTIAL
        } else {
            EXIT_FAILURE
        }
    }

    /// True when every step passed.
    pub fn passed(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.status == StepStatus::Pass)
    }

    /// A table with one aligned row per step; failed rows are followed by `cause:` and `fix:`
    /// lines, and a summary line closes the table.
    pub fn render_table(&self) -> String {
        let header = ["RESULT", "STEP", "TARGET", "TIME", "DETAIL"];
        let rows: Vec<[String; 5]> = self
            .steps
            .iter()
            .map(|s| {
                let result = match s.status {
                    StepStatus::Pass => "ok",
                    StepStatus::Fail => "FAIL",
                    StepStatus::Skip => "skip",
                };
                let time = if s.status == StepStatus::Skip { "-".to_owned() } else { format!("{}ms", s.duration_ms) };
                [result.to_owned(), s.name.clone(), s.target.clone(), time, s.detail.clone()]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 5]| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
                }
            }
            out.trim_end().to_owned() + "\n"
        };
        let indent = " ".repeat(widths[0] + 2);
        let mut out = line(header);
        for (row, step) in rows.iter().zip(&self.steps) {
            out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
            if let Some(cause) = &step.cause {
                out.push_str(&format!("{indent}cause: {cause}\n"));
            }
            if let Some(fix) = &step.fix {
                out.push_str(&format!("{indent}fix:   {fix}\n"));
            }
        }
        let count = |status| self.steps.iter().filter(|s| s.status == status).count();
        if self.passed() {
            out.push_str(&format!("check passed: all {} steps ok\n", self.steps.len()));
        } else {
            out.push_str(&format!(
                "check failed: {} failed, {} skipped, {} ok\n",
                count(StepStatus::Fail),
                count(StepStatus::Skip),
                count(StepStatus::Pass)
            ));
        }
        out
    }
}

impl Serialize for CheckReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut report = serializer.serialize_struct("CheckReport", 4)?;
        report.serialize_field("auth_url", &self.auth_url)?;
        report.serialize_field("api_server", &self.api_server)?;
        report.serialize_field("passed", &self.passed())?;
        report.serialize_field("steps", &self.steps)?;
        report.end()
    }
}

/// Runs the check and prints the report. Exit code 0 only when every step passed, 2 when only
/// the API server's steps failed, 1 when a step of the auth service failed.
pub async fn execute(options: CheckOptions, output: Output) -> ExitCode {
    if options.trust == ServerTrust::InsecureSkipVerify {
        eprintln!("warning: --insecure-skip-tls-verify: the auth service's certificate is not verified");
    }
    if options.auth_url.trim_start().to_ascii_lowercase().starts_with("http://") {
        eprintln!("warning: {} is plain http: tokens and certificates would travel unencrypted", options.auth_url);
    }
    print_report(&run_check(options).await, output)
}

/// Prints a report (`check`, `check --pre`). Exit code 0 only when every step passed, 2 when
/// only the API server's steps failed, 1 otherwise.
pub fn print_report(report: &CheckReport, output: Output) -> ExitCode {
    match crate::output::document(output, report) {
        Some(document) => print!("{document}"),
        None => print!("{}", report.render_table()),
    }
    ExitCode::from(report.exit_status())
}

// ---------------------------------------------------------------------------------------------
// The walk.

const DNS: &str = "DNS resolution";
const TCP: &str = "TCP connect";
const TLS: &str = "TLS handshake";

/// The HTTP request that proves the service answers.
#[derive(Clone, Copy)]
enum Probe {
    Ids,
    Version,
}

impl Probe {
    fn path(self) -> &'static str {
        match self {
            Probe::Ids => "/ids",
            Probe::Version => "/version",
        }
    }

    fn step(self) -> &'static str {
        match self {
            Probe::Ids => "GET /ids",
            Probe::Version => "GET /version",
        }
    }
}

/// A failed step's detail, cause and fix.
struct Failure {
    detail: String,
    cause: String,
    fix: String,
}

impl Failure {
    fn new(detail: impl Into<String>, cause: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { detail: detail.into(), cause: cause.into(), fix: fix.into() }
    }
}

/// Rows for one target; a failure appends skip rows for the steps still planned.
struct Walk<'a> {
    component: &'static str,
    plan: Vec<&'static str>,
    steps: &'a mut Vec<CheckStep>,
}

impl Walk<'_> {
    fn row(&self, name: &str, target: &str, status: StepStatus, started: Option<Instant>, detail: String) -> CheckStep {
        CheckStep {
            name: format!("{}: {name}", self.component),
            target: target.to_owned(),
            status,
            ok: status == StepStatus::Pass,
            duration_ms: started.map_or(0, |s| u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX)),
            detail,
            cause: None,
            fix: None,
        }
    }

    fn pass(&mut self, name: &'static str, target: &str, started: Instant, detail: String) {
        let row = self.row(name, target, StepStatus::Pass, Some(started), detail);
        self.steps.push(row);
    }

    fn fail(&mut self, name: &'static str, target: &str, started: Instant, failure: Failure) {
        let mut row = self.row(name, target, StepStatus::Fail, Some(started), failure.detail);
        row.cause = Some(failure.cause);
        row.fix = Some(failure.fix);
        self.steps.push(row);
        let later = self.plan.iter().skip_while(|planned| **planned != name).skip(1);
        let skipped: Vec<CheckStep> = later
            .map(|planned| {
                self.row(planned, target, StepStatus::Skip, None, "skipped: an earlier step failed".to_owned())
            })
            .collect();
        self.steps.extend(skipped);
    }
}

async fn walk(
    component: &'static str,
    url: &str,
    trust: &ServerTrust,
    timeout: Duration,
    probe: Probe,
    steps: &mut Vec<CheckStep>,
) {
    let mut w = Walk { component, plan: vec!["URL", DNS, TCP, TLS, probe.step()], steps };
    let started = Instant::now();
    let endpoint = match Endpoint::parse(url) {
        Ok(endpoint) => endpoint,
        Err(error) => {
            let fix = "give a URL such as https://auth.example.org:8443 (scheme, host and port)";
            w.fail("URL", url, started, Failure::new(error.to_string(), "the URL cannot be used", fix));
            return;
        }
    };
    w.plan.retain(|step| *step != "URL" && (endpoint.tls || *step != TLS));

    // DNS resolution.
    let started = Instant::now();
    let addrs = match transport::resolve(&endpoint.host, endpoint.port, Deadline::after(timeout)).await {
        Ok(addrs) => {
            let detail = if endpoint.host.parse::<IpAddr>().is_ok() {
                "IP address, nothing to resolve".to_owned()
            } else {
                let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                format!("resolves to {}", list.join(", "))
            };
            w.pass(DNS, &endpoint.host, started, detail);
            addrs
        }
        Err(error) => {
            let failure = Failure::new(
                error_chain(&error),
                format!("the name {} does not resolve from this machine", endpoint.host),
                "check the spelling; for a LoadBalancer or Ingress host make sure the DNS record exists in a zone this machine can see",
            );
            w.fail(DNS, &endpoint.host, started, failure);
            return;
        }
    };

    // TCP connect.
    let started = Instant::now();
    let target = format!(
        "{}:{}",
        if endpoint.host.contains(':') { format!("[{}]", endpoint.host) } else { endpoint.host.clone() },
        endpoint.port
    );
    let (tcp, peer) = match transport::connect(&addrs, Deadline::after(timeout)).await {
        Ok(connected) => {
            w.pass(TCP, &target, started, format!("connected to {}", connected.1));
            connected
        }
        Err(error) => {
            w.fail(TCP, &target, started, diagnose_connect(&error, timeout));
            return;
        }
    };

    // TLS handshake, then the HTTP probe on the same connection.
    let request = match endpoint.request(Method::GET, probe.path(), None) {
        Ok(request) => request,
        Err(error) => {
            w.fail(
                probe.step(),
                url,
                Instant::now(),
                Failure::new(error.to_string(), "the URL path is invalid", "remove the path from the URL"),
            );
            return;
        }
    };
    let http_target = format!("{endpoint}{}", probe.path());
    let result = if endpoint.tls {
        let started = Instant::now();
        let provider = transport::ring_provider();
        let verifier = match trust.verifier(&provider) {
            Ok(verifier) => verifier,
            Err(error) => {
                let fix = "pass a PEM file with the CA certificate (--ca-file), or pin the certificate with --ca-hash";
                w.fail(
                    TLS,
                    &target,
                    started,
                    Failure::new(error.to_string(), "the certificates to trust could not be loaded", fix),
                );
                return;
            }
        };
        let recorder = Arc::new(ChainRecorder::new(verifier, &provider));
        let config = transport::client_config(recorder.clone(), provider);
        match transport::tls_handshake(tcp, config, &endpoint, peer, Deadline::after(timeout)).await {
            Ok(stream) => {
                let chain = transport::peer_certificates(&stream);
                let protocol = stream.get_ref().1.protocol_version().map(protocol_name).unwrap_or("TLS");
                w.pass(TLS, &target, started, describe_session(protocol, &chain, trust, component));
                let started = Instant::now();
                (started, transport::exchange(stream, None, request, &endpoint, peer, Deadline::after(timeout)).await)
            }
            Err(error) => {
                w.fail(TLS, &target, started, diagnose_tls(&error, &recorder.chain(), &endpoint, component));
                return;
            }
        }
    } else {
        let started = Instant::now();
        let (stream, first) = Sniffed::new(tcp);
        (started, transport::exchange(stream, Some(&first), request, &endpoint, peer, Deadline::after(timeout)).await)
    };

    let (started, result) = result;
    let judged = match result {
        Ok((status, headers, body)) => match probe {
            Probe::Ids => judge_ids(status, &headers, &body),
            Probe::Version => judge_version(status, &body),
        },
        Err(error) => Err(diagnose_http(&error, timeout, component)),
    };
    match judged {
        Ok(detail) => {
            let detail =
                if endpoint.tls { detail } else { format!("{detail}; warning: plain http, nothing is encrypted") };
            w.pass(probe.step(), &http_target, started, detail);
        }
        Err(failure) => w.fail(probe.step(), &http_target, started, failure),
    }
}

// ---------------------------------------------------------------------------------------------
// Diagnoses.

fn diagnose_connect(error: &TransportError, timeout: Duration) -> Failure {
    let TransportError::Connect { addr, failure, .. } = error else {
        return Failure::new(error_chain(error), "no connection could be made", "check the host and port");
    };
    let private = is_private(addr.ip());
    let behind_nat = if private {
        format!("; {} is a private address, reachable only inside its own network (a NodePort on a node's internal IP is a common case)", addr.ip())
    } else {
        String::new()
    };
    match failure {
        ConnectFailure::Refused => Failure::new(
            error.to_string(),
            format!("the host answered but nothing is listening on port {} (connection refused)", addr.port()),
            "check the port (the Service's NodePort or LoadBalancer port, or 443 for an Ingress) and that the pods are running; a Service without ready endpoints also refuses connections",
        ),
        ConnectFailure::TimedOut => Failure::new(
            format!("no answer from {addr} within {}", humanize(timeout)),
            format!("packets are dropped on the way (firewall, security group) or the address is not routable from here{behind_nat}"),
            if private {
                "advertise a public address (LoadBalancer, Ingress, or --advertise-auth-address) or check from a machine inside that network"
            } else {
                "open the port in the firewall or cloud security group between the two clusters"
            },
        ),
        ConnectFailure::Unreachable => Failure::new(
            error_chain(error),
            format!("this machine has no route to {}{behind_nat}", addr.ip()),
            "check the address, the routing and any VPN between the two clusters",
        ),
        ConnectFailure::Other => Failure::new(error_chain(error), "the connection failed", "check the address and the network between the two clusters"),
    }
}

fn diagnose_tls(error: &TransportError, chain: &[Vec<u8>], endpoint: &Endpoint, component: &str) -> Failure {
    let leaf = chain.first().and_then(|der| CertSummary::of(der));
    let detail = leaf.as_ref().map_or_else(|| error.to_string(), CertSummary::describe);
    let TransportError::TlsHandshake { failure, .. } = error else {
        return Failure::new(detail, error.to_string(), "see the server's logs");
    };
    let presented_pin = leaf.as_ref().map(|l| l.pin.clone()).unwrap_or_default();
    let ingress_fake =
        leaf.as_ref().is_some_and(|l| l.subject.contains("Kubernetes Ingress Controller Fake Certificate"));
    match failure {
        _ if ingress_fake => Failure::new(
            detail,
            "an Ingress controller answered with its default self-signed certificate: the request did not reach liqo-auth's certificate (no TLS secret for this host, or TLS passthrough is off)",
            "give the Ingress a TLS secret for this host name, or enable SSL passthrough for the liqo-auth Ingress; check that its host rule matches the URL",
        ),
        TlsFailure::PinMismatch { presented } => Failure::new(
            detail,
            format!("none of the {} certificate(s) the server presented matches --ca-hash; the server's certificate pin is {presented_pin}", presented.len()),
            "copy the hash again from `liqo-auth token create --print-peer-command` on the provider (the serving certificate may have been replaced), and make sure the URL reaches liqo-auth and not a proxy terminating TLS",
        ),
        TlsFailure::UnknownIssuer => Failure::new(
            detail,
            "the certificate is not signed by a CA this machine trusts (system roots or --ca-file)",
            format!("pass the CA that signed it with --ca-file, or pin it with --ca-hash after comparing with the provider's --print-peer-command output (the certificate presented here has pin {presented_pin})"),
        ),
        TlsFailure::Expired => Failure::new(
            detail,
            format!("the certificate expired{}", leaf.as_ref().map(|l| format!(" on {}", l.not_after)).unwrap_or_default()),
            "renew the serving certificate on the provider; if it looks valid there, check this machine's clock",
        ),
        TlsFailure::NotYetValid => Failure::new(
            detail,
            "the certificate is not valid yet: one of the two clocks is wrong",
            "synchronise the clocks (NTP) of this machine and the provider",
        ),
        TlsFailure::NameMismatch if leaf.as_ref().is_some_and(|l| l.sans.is_empty()) => Failure::new(
            detail,
            "the certificate has no SANs (subjectAltName); TLS clients ignore the CN, so it matches no host name",
            "reissue the serving certificate with SANs for every name and IP peers use, or pin it with --ca-hash",
        ),
        TlsFailure::NameMismatch => Failure::new(
            detail,
            format!("the certificate is not valid for {} (its SANs: {})", endpoint.host, leaf.as_ref().map(|l| l.sans.join(", ")).unwrap_or_default()),
            format!("use one of the certificate's names in the URL, or reissue it with {} in its SANs (e.g. the public IP behind NAT or the Ingress host)", endpoint.host),
        ),
        TlsFailure::NotTls if component == "auth" => Failure::new(
            error.to_string(),
            "the server answered plain HTTP on this port, not TLS",
            "if liqo-auth runs without TLS use http://; with an Ingress use its TLS port (443), not the HTTP one; check the URL's port",
        ),
        TlsFailure::NotTls => Failure::new(
            error.to_string(),
            "the server answered plain HTTP on this port, not TLS",
            "check the API server URL's port (usually 6443, or 443 behind a load balancer)",
        ),
        TlsFailure::PeerClosed => Failure::new(
            error_chain(error),
            "the server closed the connection during the handshake",
            "a proxy or load balancer may expect another host name (SNI) or protocol on this port; check that the port belongs to liqo-auth",
        ),
        TlsFailure::AlertReceived(alert) => Failure::new(
            error_chain(error),
            format!("the server refused the handshake (alert {alert})"),
            "liqo-auth needs TLS 1.2 or 1.3; a proxy in between may require a client certificate or another host name",
        ),
        TlsFailure::Other(_) => Failure::new(error_chain(error), error.to_string(), "see the detail, and the server's logs"),
    }
}

fn diagnose_http(error: &TransportError, timeout: Duration, component: &str) -> Failure {
    let flag = if component == "auth" { "--auth-url" } else { "--api-server" };
    match error {
        TransportError::TlsOnPlainPort { .. } => Failure::new(
            error.to_string(),
            "the server answered with TLS but the URL is plain http://",
            format!("use https:// in {flag}"),
        ),
        TransportError::Timeout { .. } => Failure::new(
            format!("no HTTP answer within {}", humanize(timeout)),
            "the port accepts connections but does not answer HTTP: another protocol, or a stuck server or proxy",
            "check that the port belongs to the right service and look at its logs",
        ),
        TransportError::BodyTooLarge { .. } => Failure::new(
            error.to_string(),
            "the answer is far larger than anything the service sends",
            format!("{flag} reaches another service; check host, port and path"),
        ),
        _ => Failure::new(
            error_chain(error),
            "the connection broke during the HTTP exchange",
            "check the server's logs; a proxy in between may reject the request",
        ),
    }
}

fn judge_ids(status: u16, headers: &http::HeaderMap, body: &[u8]) -> Result<String, Failure> {
    let content_type =
        headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("no content type");
    let summary = format!("{status}, {content_type}, {} bytes", body.len());
    match status {
        200 => {}
        404 => {
            return Err(Failure::new(
                summary,
                "GET /ids answered 404: the URL does not reach liqo-auth (another service, an extra path, or an Ingress host or path rule that does not match)",
                "use the URL printed by `liqo-auth token create --print-peer-command`; with an Ingress check its host and path rules",
            ))
        }
        502..=504 => return Err(proxy_failure(summary, status)),
        _ => {
            return Err(Failure::new(
                summary,
                format!("GET /ids answered {status}; liqo-auth answers 200"),
                "the URL reaches another service or a proxy; check host, port and path",
            ))
        }
    }
    let not_liqo = |what: &str| {
        Failure::new(
            summary.clone(),
            format!("the answer to GET /ids {what}, so this is probably not liqo-auth"),
            "check that the URL reaches liqo-auth and not an Ingress default backend or another web server",
        )
    };
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|_| not_liqo("is not JSON"))?;
    let cluster_id = json.get("clusterId").and_then(|v| v.as_str()).unwrap_or("");
    if cluster_id.is_empty() {
        return Err(Failure::new(
            summary,
            "GET /ids answered JSON without a non-empty clusterId",
            "the provider has no cluster identity configured; set its cluster ID and restart liqo-auth",
        ));
    }
    let name = json.get("clusterName").and_then(|v| v.as_str()).filter(|n| !n.is_empty());
    Ok(match name {
        Some(name) => format!("200, clusterId {cluster_id}, clusterName {name}"),
        None => format!("200, clusterId {cluster_id}"),
    })
}

fn judge_version(status: u16, body: &[u8]) -> Result<String, Failure> {
    match status {
        200 => {
            let version = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("gitVersion").and_then(|g| g.as_str()).map(str::to_owned));
            Ok(match version {
                Some(version) => format!("200, Kubernetes {version}"),
                None => "200, reachable".to_owned(),
            })
        }
        401 | 403 => Ok(format!("{status}: reachable (anonymous requests are refused, which is expected)")),
        502..=504 => Err(proxy_failure(format!("{status}"), status)),
        _ => Err(Failure::new(
            format!("{status}"),
            format!("GET /version answered {status}; an API server answers 200, 401 or 403"),
            "check that apiServerUrl points at the Kubernetes API server and not at another service",
        )),
    }
}

fn proxy_failure(summary: String, status: u16) -> Failure {
    Failure::new(
        summary,
        format!("a proxy or load balancer answered {status}: it cannot reach the service behind it"),
        "check that the pods are ready and the Service has endpoints; if liqo-auth serves TLS the Ingress needs an HTTPS backend (e.g. nginx.ingress.kubernetes.io/backend-protocol: HTTPS)",
    )
}

// ---------------------------------------------------------------------------------------------
// Certificate descriptions.

/// What `check` shows about a certificate.
struct CertSummary {
    subject: String,
    sans: Vec<String>,
    not_after: String,
    not_after_unix: i64,
    pin: String,
}

impl CertSummary {
    fn of(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let sans = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext.value.general_names.iter().map(general_name).collect(),
            _ => Vec::new(),
        };
        let not_after = cert.validity().not_after;
        Some(Self {
            subject: cert.subject().to_string(),
            sans,
            not_after: pki::format_unix(not_after.timestamp()),
            not_after_unix: not_after.timestamp(),
            pin: pki::spki_pin_of_spki(cert.public_key().raw),
        })
    }

    fn describe(&self) -> String {
        let sans = if self.sans.is_empty() { "no SANs".to_owned() } else { format!("SANs {}", self.sans.join(", ")) };
        let now = pki::unix_now();
        let days = (self.not_after_unix - now) / 86_400;
        let expiry = if self.not_after_unix < now {
            format!("EXPIRED on {}", self.not_after)
        } else if days < 14 {
            format!("expires {} (in {days} days, soon)", self.not_after)
        } else {
            format!("expires {} (in {days} days)", self.not_after)
        };
        format!("subject {}; {sans}; {expiry}", if self.subject.is_empty() { "(empty)" } else { &self.subject })
    }
}

fn general_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(dns) => format!("DNS:{dns}"),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => format!("IP:{}", IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap_or_default())),
            16 => format!("IP:{}", IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap_or_default())),
            _ => "IP:(invalid)".to_owned(),
        },
        other => other.to_string(),
    }
}

fn describe_session(protocol: &str, chain: &[Vec<u8>], trust: &ServerTrust, component: &str) -> String {
    let leaf = chain.first().and_then(|der| CertSummary::of(der));
    let mut parts = vec![protocol.to_owned()];
    if let Some(leaf) = &leaf {
        parts.push(leaf.describe());
    }
    parts.push(match trust {
        ServerTrust::Pin(pins) => {
            let matched = chain.iter().position(|der| {
                pki::spki_pin(der).ok().and_then(|p| pki::parse_pin(&p)).is_some_and(|p| pins.contains(&p))
            });
            match matched {
                Some(0) => "pin matches the server certificate".to_owned(),
                Some(i) => format!("pin matches chain certificate {i}, which signed the server certificate"),
                None => "pin matched".to_owned(),
            }
        }
        ServerTrust::CaPem(_) => "chain and host name verified with --ca-file".to_owned(),
        ServerTrust::SystemRoots => "chain and host name verified with the system roots".to_owned(),
        ServerTrust::InsecureSkipVerify if component == "auth" => {
            "NOT verified (--insecure-skip-tls-verify)".to_owned()
        }
        ServerTrust::InsecureSkipVerify => "not verified here (its CA arrives with the identity)".to_owned(),
    });
    if leaf.as_ref().is_some_and(|l| l.sans.is_empty()) {
        parts.push("warning: no SANs, clients that verify host names will reject it".to_owned());
    }
    parts.join("; ")
}

fn protocol_name(version: rustls::ProtocolVersion) -> &'static str {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2",
        _ => "TLS",
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private() || v4.is_link_local() || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

fn humanize(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{closed_port, TestCa, TestServer};

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn options(auth_url: String, trust: ServerTrust) -> CheckOptions {
        CheckOptions { auth_url, api_server: None, trust, timeout: TIMEOUT }
    }

    fn step<'a>(report: &'a CheckReport, name: &str) -> &'a CheckStep {
        report.steps.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no step {name} in {report:#?}"))
    }

    fn statuses(report: &CheckReport) -> Vec<StepStatus> {
        report.steps.iter().map(|s| s.status).collect()
    }

    #[tokio::test]
    async fn check_passes_against_a_live_tls_server_serving_ids_and_an_api_server() {
        let cert = TestCa::new("ca").server_cert(&["127.0.0.1"]);
        let pin = pki::parse_pin(&pki::spki_pin(&cert.chain[0]).expect("pin")).expect("pin");
        let server = TestServer::tls(cert).await;
        let mut opts = options(server.https_url(), ServerTrust::Pin(vec![pin]));
        opts.api_server = Some(server.https_url());
        let report = run_check(opts).await;
        assert!(report.passed(), "{}", report.render_table());
        assert_eq!(report.steps.len(), 8);
        let tls = step(&report, "auth: TLS handshake");
        assert!(tls.detail.contains("TLS 1.3") && tls.detail.contains("IP:127.0.0.1"), "{}", tls.detail);
        assert!(tls.detail.contains("pin matches the server certificate"), "{}", tls.detail);
        assert_eq!(step(&report, "auth: GET /ids").detail, "200, clusterId provider-1, clusterName milan");
        assert!(step(&report, "api-server: GET /version").detail.starts_with("401: reachable"));
    }

    #[tokio::test]
    async fn check_reports_connection_refused_against_a_closed_port_with_cause_and_fix() {
        let report = run_check(options(format!("https://{}", closed_port()), ServerTrust::InsecureSkipVerify)).await;
        assert!(!report.passed());
        assert_eq!(statuses(&report), [StepStatus::Pass, StepStatus::Fail, StepStatus::Skip, StepStatus::Skip]);
        let tcp = step(&report, "auth: TCP connect");
        assert!(tcp.cause.as_deref().is_some_and(|c| c.contains("connection refused")), "{tcp:?}");
        assert!(tcp.fix.as_deref().is_some_and(|f| f.contains("port")), "{tcp:?}");
        assert!(!tcp.ok);
    }

    #[tokio::test]
    async fn check_reports_a_wrong_pin_and_shows_the_presented_one() {
        let cert = TestCa::new("ca").server_cert(&["127.0.0.1"]);
        let presented = pki::spki_pin(&cert.chain[0]).expect("pin");
        let server = TestServer::tls(cert).await;
        let report = run_check(options(server.https_url(), ServerTrust::Pin(vec![[1u8; 32]]))).await;
        let tls = step(&report, "auth: TLS handshake");
        assert_eq!(tls.status, StepStatus::Fail);
        let cause = tls.cause.as_deref().unwrap_or_default();
        assert!(cause.contains("--ca-hash") && cause.contains(&presented), "{cause}");
        assert!(tls.detail.contains("subject CN=liqo-auth test server"), "{}", tls.detail);
        assert_eq!(step(&report, "auth: GET /ids").status, StepStatus::Skip);
    }

    #[tokio::test]
    async fn check_recognises_plain_http_answered_on_a_tls_port() {
        let server = TestServer::plain().await;
        let report = run_check(options(server.https_url(), ServerTrust::InsecureSkipVerify)).await;
        let tls = step(&report, "auth: TLS handshake");
        assert_eq!(tls.status, StepStatus::Fail);
        assert!(tls.cause.as_deref().is_some_and(|c| c.contains("plain HTTP")), "{tls:?}");
        assert!(tls.fix.as_deref().is_some_and(|f| f.contains("http://")), "{tls:?}");
    }

    #[tokio::test]
    async fn check_recognises_tls_answered_on_a_plain_http_url() {
        let server = TestServer::tls(TestCa::new("ca").server_cert(&["127.0.0.1"])).await;
        let report = run_check(options(server.http_url(), ServerTrust::SystemRoots)).await;
        assert_eq!(statuses(&report), [StepStatus::Pass, StepStatus::Pass, StepStatus::Fail]);
        let ids = step(&report, "auth: GET /ids");
        assert!(ids.fix.as_deref().is_some_and(|f| f.contains("https://")), "{ids:?}");
    }

    #[tokio::test]
    async fn check_passes_over_plain_http_with_a_warning() {
        let server = TestServer::plain().await;
        let report = run_check(options(server.http_url(), ServerTrust::SystemRoots)).await;
        assert!(report.passed(), "{}", report.render_table());
        assert!(step(&report, "auth: GET /ids").detail.contains("warning: plain http"));
    }

    #[tokio::test]
    async fn check_reports_a_certificate_without_sans() {
        let ca = TestCa::new("ca");
        let server = TestServer::tls(ca.server_cert(&[])).await;
        let report = run_check(options(server.https_url(), ServerTrust::CaPem(ca.pem().into_bytes()))).await;
        let tls = step(&report, "auth: TLS handshake");
        assert!(tls.cause.as_deref().is_some_and(|c| c.contains("no SANs")), "{tls:?}");
    }

    #[tokio::test]
    async fn check_reports_an_expired_certificate_with_its_date() {
        let ca = TestCa::new("ca");
        let server = TestServer::tls(ca.expired_server_cert(&["127.0.0.1"])).await;
        let report = run_check(options(server.https_url(), ServerTrust::CaPem(ca.pem().into_bytes()))).await;
        let tls = step(&report, "auth: TLS handshake");
        assert!(tls.cause.as_deref().is_some_and(|c| c.contains("expired on 2021-01-01")), "{tls:?}");
    }

    #[tokio::test]
    async fn check_reports_a_service_that_is_not_liqo_auth() {
        let server = TestServer::plain().await;
        let report = run_check(options(format!("{}/elsewhere", server.http_url()), ServerTrust::SystemRoots)).await;
        let ids = step(&report, "auth: GET /ids");
        assert_eq!(ids.status, StepStatus::Fail);
        assert!(ids.cause.as_deref().is_some_and(|c| c.contains("404")), "{ids:?}");
    }

    #[tokio::test]
    async fn check_reports_an_unusable_url_as_its_own_step() {
        let report = run_check(options("ftp://host".to_owned(), ServerTrust::SystemRoots)).await;
        assert_eq!(report.steps[0].name, "auth: URL");
        assert_eq!(report.steps[0].status, StepStatus::Fail);
        assert!(report.steps[1..].iter().all(|s| s.status == StepStatus::Skip));
    }

    fn sample_report() -> CheckReport {
        let step = |name: &str, status, detail: &str, cause: Option<&str>, fix: Option<&str>| CheckStep {
            name: name.to_owned(),
            target: "auth.example.org:8443".to_owned(),
            status,
            ok: status == StepStatus::Pass,
            duration_ms: 12,
            detail: detail.to_owned(),
            cause: cause.map(str::to_owned),
            fix: fix.map(str::to_owned),
        };
        CheckReport {
            auth_url: "https://auth.example.org:8443".to_owned(),
            api_server: None,
            steps: vec![
                step("auth: DNS resolution", StepStatus::Pass, "resolves to 192.0.2.1", None, None),
                step("auth: TCP connect", StepStatus::Fail, "refused", Some("nothing listens"), Some("check the port")),
                step("auth: TLS handshake", StepStatus::Skip, "skipped: an earlier step failed", None, None),
            ],
        }
    }

    #[test]
    fn render_table_aligns_columns_and_puts_cause_and_fix_under_failed_rows() {
        let table = sample_report().render_table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("RESULT  STEP"), "{table}");
        let detail_column = lines[0].find("DETAIL").expect("header has DETAIL");
        assert_eq!(lines[1].find("resolves to"), Some(detail_column), "{table}");
        assert_eq!(lines[2].find("refused"), Some(detail_column), "{table}");
        assert!(lines[2].starts_with("FAIL"));
        assert_eq!(lines[3], "        cause: nothing listens");
        assert_eq!(lines[4], "        fix:   check the port");
        assert!(lines[5].starts_with("skip") && lines[5].contains(" -  "), "{table}");
        assert_eq!(lines[6], "check failed: 1 failed, 1 skipped, 1 ok");
    }

    #[test]
    fn json_output_has_the_verdict_and_one_object_per_step() {
        let json = serde_json::to_value(sample_report()).expect("serialises");
        assert_eq!(json["passed"], false);
        assert_eq!(json["auth_url"], "https://auth.example.org:8443");
        let steps = json["steps"].as_array().expect("steps array");
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[1]["status"], "fail");
        assert_eq!(steps[1]["ok"], false);
        assert_eq!(steps[1]["duration_ms"], 12);
        assert_eq!(steps[1]["cause"], "nothing listens");
        assert_eq!(steps[0]["cause"], serde_json::Value::Null);
    }
}
