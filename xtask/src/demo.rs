//! The demo: the dataplane as a bump in the wire in front of a legacy OT host, enforcing the example policy
//! (`config/policy.json`) on real clients, observed through its control socket; then `bulkhead-control` beside
//! it: the REST API imports, explains and commits `config/policy-demo.json` (a legacy database and an old SCADA
//! host behind the gateway, clients on the other side), real traffic follows, and the metrics show it.

use std::io::BufRead;
use std::time::Duration;

use protocol::{CountersReport, EventBatch, EventKind, FlowFilter, FlowList, Request, Status};
use serde_json::{json, Value};
use testbed::control::{Control, ControlOptions};
use testbed::{addr, Background, Options, Side, TestBed};

use crate::util::{build_release, root, show, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Keep the bed up after the scripted traffic, until Enter is pressed, to try your own clients.
    #[arg(long)]
    keep: bool,
}

fn step(title: &str) {
    println!("\n=== {title}");
}

/// Runs a client in a namespace, showing the command, its output and whether it got through.
fn client(side: &Side, args: &[&str], expect_through: bool) -> Result {
    let mut cmd = side.command(args[0]);
    cmd.args(&args[1..]);
    println!("$ {}", show(&cmd));
    let ok = cmd.status()?.success();
    println!("  -> {}", if ok { "got through" } else { "blocked" });
    if ok != expect_through {
        return Err(format!(
            "`{}` was expected to be {}",
            args.join(" "),
            if expect_through { "allowed" } else { "blocked" }
        )
        .into());
    }
    Ok(())
}

pub fn run(args: &Args) -> Result {
    let bin = build_release(&["bulkhead-dataplane", "bulkhead-control"])?;
    let policy = root().join("config/policy.json");
    let mut opts = Options::new(bin.join("bulkhead-dataplane"));
    opts.stats_interval_ms = 1000;
    opts.policy = Some(policy.clone());
    step("Starting bulkhead-dataplane between an engineering workstation and a legacy OT host");
    let mut bed = TestBed::start(&opts)?;
    println!(
        "  engineering: {} [{} {}]  <== bulkhead-dataplane ==>  ot-legacy: {} [{} {}]",
        bed.a.netns,
        addr::A4,
        addr::A6,
        bed.b.netns,
        addr::B4,
        addr::B6
    );
    println!(
        "  policy: {} (loaded at start, persisted under {})",
        policy.display(),
        bed.dir.join("state").display()
    );
    let status: Status = bed.ask(&Request::Status {})?;
    println!("  status: {}", serde_json::to_value(status)?);

    let www = bed.dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("blob"), vec![0x5a; 32 << 20])?;
    let www_s = www.to_str().unwrap_or(".");
    let mut servers = Vec::new();
    for port in ["8080", "5201", "23"] {
        servers.push(bed.b.spawn(&[
            "python3",
            "-m",
            "http.server",
            port,
            "--bind",
            addr::B4,
            "--directory",
            www_s,
        ])?);
        bed.b.wait_listening(port.parse()?)?;
    }

    step("Allowed: engineering pings the OT host and downloads 32 MiB from its HMI web server (tcp/8080)");
    client(&bed.a, &["ping", "-c", "3", "-i", "0.2", addr::B4], true)?;
    client(&bed.a, &["ping", "-c", "2", "-i", "0.2", addr::B6], true)?;
    let url = format!("http://{}:8080/blob", addr::B4);
    let fmt = "  downloaded %{size_download} bytes at %{speed_download} bytes/s\n";
    client(
        &bed.a,
        &["curl", "-sS", "-o", "/dev/null", "-w", fmt, &url],
        true,
    )?;

    step("Denied: a service no rule allows (tcp/5201) is dropped silently: the client times out");
    client(
        &bed.a,
        &[
            "curl",
            "-sS",
            "--max-time",
            "2",
            "-o",
            "/dev/null",
            &format!("http://{}:5201/blob", addr::B4),
        ],
        false,
    )?;

    step("Denied: the legacy host may start nothing (rule 90), not even a ping back");
    client(&bed.b, &["ping", "-c", "2", "-W", "1", addr::A4], false)?;

    step("Monitor mode: telnet (tcp/23) is denied by a rule in monitor mode: it passes, counted as would-deny");
    client(
        &bed.a,
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            &format!("http://{}:23/blob", addr::B4),
        ],
        true,
    )?;

    step("What the dataplane reports on its control socket");
    let counters: CountersReport = bed.ask(&Request::Counters {})?;
    let t = &counters.totals;
    println!(
        "  packets rx {} tx {}; flows created {}, active {}; would-deny {}",
        t.rx_packets, t.tx_packets, t.flows_created, t.flows_active, t.would_deny
    );
    println!("  drops by reason: {}", serde_json::to_value(&t.drops)?);
    println!("  per rule (id name: packets bytes flows):");
    for r in &counters.rules {
        println!(
            "    {:>3} {:<22} {:>8} {:>10} {:>5}",
            r.rule_id, r.name, r.packets, r.bytes, r.flows
        );
    }
    let list = Request::Flows {
        filter: FlowFilter::default(),
        limit: Some(5),
    };
    let flows: FlowList = bed.ask(&list)?;
    println!("  tracked connections (first 5):");
    for f in &flows.flows {
        println!(
            "    {} {}:{} -> {}:{} {} rule {}",
            f.proto, f.src, f.sport, f.dst, f.dport, f.state, f.rule_id
        );
    }
    let events: EventBatch = bed.ask(&Request::Events { max: Some(1000) })?;
    println!("  flow log (new and denied flows):");
    for e in events
        .events
        .iter()
        .filter(|e| e.kind != EventKind::Closed)
        .take(12)
    {
        println!(
            "    {:<6} {:<10} {}:{} -> {}:{} proto {} rule {} ({} -> {})",
            e.kind.as_str(),
            e.verdict.as_str(),
            e.src,
            e.sport,
            e.dst,
            e.dport,
            e.proto,
            e.rule_id,
            serde_json::to_value(&e.src_segments)?,
            serde_json::to_value(&e.dst_segments)?
        );
    }

    drop(servers);
    let (control, _servers) = control_demo(&bed, &bin)?;

    if args.keep {
        let _chatter = chatter(&bed)?;
        step("The bed stays up. Open the web console, or try in another shell:");
        println!(
            "  console: {}/  (token: {}; the browser warns about the self-signed certificate: accept it if its \
             SHA-256 fingerprint is {})",
            control.url,
            control.token,
            fingerprint(&control)
        );
        println!("  ip netns exec {} ping {}", bed.a.netns, addr::B4);
        println!(
            "  curl --cacert {} -H 'Authorization: Bearer {}' {}/api/v1/active",
            cert(&control),
            control.token,
            control.url
        );
        let socket = bed.control_socket();
        println!("  echo '{{\"v\":1,\"op\":\"counters\"}}' | python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(\"{}\"); s.sendall(sys.stdin.buffer.read()); print(s.makefile().readline())'", socket.display());
        println!("Press Enter to stop.");
        let _ = std::io::stdin().lock().lines().next();
    }
    drop(control);

    step("Stopping (SIGTERM): the dataplane stops its ports and prints its counters");
    std::thread::sleep(Duration::from_millis(200));
    let stopped = bed.stop()?;
    print!(
        "{}",
        stopped
            .stderr
            .lines()
            .skip_while(|l| !l.starts_with("bulkhead-dataplane stopped"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    if !stopped.status.success() {
        return Err(format!("the dataplane exited with {}", stopped.status).into());
    }
    Ok(())
}

/// Extra addresses for the control part: a second client on side A, the SCADA host beside the database on B.
const OFFICE: &str = "10.99.0.11";
const SCADA: &str = "10.99.0.3";

/// Calls the REST API with curl, printing the command (token elided) and a summary of the answer.
fn api(
    c: &Control,
    method: &str,
    path: &str,
    body: Option<&Value>,
    etag: Option<&str>,
) -> Result<Value> {
    let mut shown = format!("$ curl --cacert $CERT -X {method} -H 'Authorization: Bearer $TOKEN'");
    let mut headers = Vec::new();
    if let Some(e) = etag {
        shown.push_str(&format!(" -H 'If-Match: {e}'"));
        headers.push(("If-Match", e));
    }
    if body.is_some() {
        shown.push_str(" -d @body.json");
    }
    println!("{shown} {}{path}", c.url);
    let r = c.request(method, path, body, &headers, Some(&c.token))?;
    if r.status >= 300 {
        return Err(format!("{method} {path}: {} {}", r.status, r.body).into());
    }
    let mut v = r.body;
    if let Some(e) = r
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("etag"))
    {
        if v.is_object() {
            v["_etag"] = json!(e.1);
        }
    }
    Ok(v)
}

/// The control part of the demo. Returns control and the servers on side B, which `--keep` leaves running.
fn control_demo(bed: &TestBed, bin: &std::path::Path) -> Result<(Control, Vec<Background>)> {
    step("Starting bulkhead-control beside the dataplane (REST API on localhost, token created at first start)");
    let mut opts = ControlOptions::new(
        bin.join("bulkhead-control"),
        &bed.dir.join("control"),
        &bed.control_socket(),
    );
    opts.web_dir = crate::util::root().join("web");
    let c = Control::start(&opts)?;
    println!("  ready: {}", c.ready);
    println!(
        "  token file: {} (mode 0600); the store: {}",
        opts.store_dir().join("tokens").display(),
        opts.store_dir().display()
    );
    println!(
        "  HTTPS at {} with the self-signed certificate control made at first start: $CERT = {}\n  \
         SHA-256 fingerprint {} (clients trust the file, or compare the fingerprint)",
        c.url,
        cert(&c),
        fingerprint(&c)
    );
    let health = c.request("GET", "/api/v1/health", None, &[], None)?;
    println!(
        "$ curl --cacert $CERT {}/api/v1/health\n  {}",
        c.url, health.body
    );

    // Side A gets an office client, side B the old SCADA host next to the database.
    bed.a.ok(&[
        "ip",
        "addr",
        "add",
        &format!("{OFFICE}/24"),
        "dev",
        &bed.a.iface,
    ])?;
    bed.b.ok(&[
        "ip",
        "addr",
        "add",
        &format!("{SCADA}/24"),
        "dev",
        &bed.b.iface,
    ])?;
    let www = bed.dir.join("www");
    let www_s = www.to_str().unwrap_or(".");
    let mut servers = Vec::new();
    for (host, port) in [(addr::B4, "5432"), (SCADA, "8080"), (SCADA, "502")] {
        servers.push(bed.b.spawn(&[
            "python3",
            "-m",
            "http.server",
            port,
            "--bind",
            host,
            "--directory",
            www_s,
        ])?);
    }
    for port in [5432, 8080, 502] {
        bed.b.wait_listening(port)?;
    }

    step("Policy as code: import config/policy-demo.json into the draft, validate it, diff it against the active policy");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(
        crate::util::root().join("config/policy-demo.json"),
    )?)?;
    let draft = api(&c, "GET", "/api/v1/draft", None, None)?;
    let etag = draft["_etag"].as_str().unwrap_or_default().to_string();
    let put = api(&c, "PUT", "/api/v1/draft", Some(&doc), Some(&etag))?;
    println!(
        "  revision {}, valid: {}",
        put["revision"], put["validation"]["valid"]
    );
    let diff = api(&c, "GET", "/api/v1/diff", None, None)?;
    for kind in ["segments", "services", "rules"] {
        let names = |k: &str| -> Vec<String> {
            diff[kind][k]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| {
                    let n = o.get("name").or_else(|| o.get("key"));
                    n.and_then(Value::as_str).unwrap_or_default().to_string()
                })
                .collect()
        };
        println!(
            "  {kind}: added {:?}, removed {:?}, changed {:?}",
            names("added"),
            names("removed"),
            names("changed")
        );
    }

    step("Explain before committing: office -> database tcp/5432, and what the draft would cut");
    let x = api(
        &c,
        "POST",
        "/api/v1/explain",
        Some(&json!({"src": OFFICE, "dst": addr::B4, "protocol": "tcp", "port": 5432})),
        None,
    )?;
    for side in ["active", "draft"] {
        let v = &x[side];
        println!(
            "  {side:<6}: {:<6} by {} (src in {}, dst in {})",
            v["verdict"].as_str().unwrap_or(""),
            v["matched"],
            v["src_segments"],
            v["dst_segments"]
        );
    }
    println!(
        "  tracked connections: {}, the draft would cut {}:",
        x["connections"]["tracked"], x["connections"]["would_cut"]
    );
    for f in x["connections"]["cut"]
        .as_array()
        .into_iter()
        .flatten()
        .take(5)
    {
        println!(
            "    proto {} {}:{} -> {}:{} ({}), admitted by rule {}",
            f["proto"],
            f["src"].as_str().unwrap_or(""),
            f["sport"],
            f["dst"].as_str().unwrap_or(""),
            f["dport"],
            f["state"].as_str().unwrap_or(""),
            f["rule_id"]
        );
    }

    step("Commit the draft with a confirm window (it reverts by itself unless confirmed), then confirm");
    let draft = api(&c, "GET", "/api/v1/draft", None, None)?;
    let etag = draft["_etag"].as_str().unwrap_or_default().to_string();
    let commit = api(
        &c,
        "POST",
        "/api/v1/commit",
        Some(
            &json!({"comment": "legacy segment: database and SCADA host", "confirm_within_s": 60}),
        ),
        Some(&etag),
    )?;
    println!(
        "  version {} enforced in {:.1} ms; pending confirm: {}",
        commit["version"],
        commit["commit_ms"].as_f64().unwrap_or(0.0),
        commit["pending_confirm"]
    );
    let active = api(&c, "GET", "/api/v1/active", None, None)?;
    let etag = active["_etag"].as_str().unwrap_or_default().to_string();
    let confirmed = api(&c, "POST", "/api/v1/confirm", None, Some(&etag))?;
    println!("  {confirmed}");

    step("Real traffic under the committed policy");
    let small = |host: &str, port: &str| format!("http://{host}:{port}/blob");
    let curl = |from: &str, url: String| -> Vec<String> {
        [
            "curl",
            "-sS",
            "--max-time",
            "2",
            "-o",
            "/dev/null",
            "--interface",
            from,
            &url,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |side: &Side, args: Vec<String>, through: bool| -> Result {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        client(side, &refs, through)
    };
    println!("Allowed: the office client queries the database (tcp/5432)");
    run(&bed.a, curl(OFFICE, small(addr::B4, "5432")), true)?;
    println!("Denied: the office client may not reach the SCADA HMI (tcp/8080)");
    run(&bed.a, curl(OFFICE, small(SCADA, "8080")), false)?;
    println!("Allowed: engineering reaches the SCADA HMI (tcp/8080) and Modbus (tcp/502)");
    run(&bed.a, curl(addr::A4, small(SCADA, "8080")), true)?;
    run(&bed.a, curl(addr::A4, small(SCADA, "502")), true)?;
    println!("Denied: the SCADA host may initiate nothing (rule 190)");
    client(
        &bed.b,
        &["ping", "-c", "1", "-W", "1", "-I", SCADA, addr::A4],
        false,
    )?;

    step("History, flows and audit through the API");
    let versions = api(&c, "GET", "/api/v1/versions", None, None)?;
    for v in versions["versions"].as_array().into_iter().flatten() {
        println!(
            "  v{} {:<8} by {:<6} {} {}",
            v["version"],
            v["kind"].as_str().unwrap_or(""),
            v["author"].as_str().unwrap_or(""),
            v["comment"].as_str().unwrap_or(""),
            if v["active"] == true { "(active)" } else { "" }
        );
    }
    let flows = api(
        &c,
        "GET",
        &format!("/api/v1/flows?addr={SCADA}&limit=5"),
        None,
        None,
    )?;
    for f in flows["flows"].as_array().into_iter().flatten() {
        println!(
            "  {} {}:{} -> {}:{} {} rule {}",
            f["proto"],
            f["src"].as_str().unwrap_or(""),
            f["sport"],
            f["dst"].as_str().unwrap_or(""),
            f["dport"],
            f["state"].as_str().unwrap_or(""),
            f["rule_id"]
        );
    }
    let audit = api(&c, "GET", "/api/v1/audit?limit=5", None, None)?;
    for e in audit["entries"].as_array().into_iter().flatten() {
        let v = |k: &str| e[k].as_u64().map_or("-".to_string(), |n| format!("v{n}"));
        // An activation is two entries: its intent, then its outcome.
        let phase = match (e["phase"].as_str(), e["outcome"].as_str()) {
            (Some("outcome"), Some(outcome)) => format!("outcome: {outcome}"),
            (Some(phase), _) => phase.to_string(),
            _ => String::new(),
        };
        println!(
            "  #{} {} {:<10} {:<14} {} -> {} {}",
            e["seq"],
            e["time"].as_str().unwrap_or(""),
            e["who"].as_str().unwrap_or(""),
            e["action"].as_str().unwrap_or(""),
            v("version_before"),
            v("version_after"),
            phase
        );
    }

    step("Metrics (Prometheus text format): GET /metrics");
    println!(
        "$ curl --cacert $CERT -H 'Authorization: Bearer $TOKEN' {}/metrics",
        c.url
    );
    std::thread::sleep(Duration::from_millis(1200));
    let m = c.call("GET", "/metrics", None)?;
    let text = m.body.as_str().unwrap_or_default().to_string();
    for line in text
        .lines()
        // The non-zero series tell the story (the zero ones are there too, for dashboards and alerts).
        .filter(|l| {
            l.starts_with("bulkhead_")
                && !l.contains("_bucket{")
                && !l.ends_with(" 0")
                && !l.contains("timestamp")
        })
        .take(30)
    {
        println!("  {line}");
    }
    Ok((c, servers))
}

/// The certificate control serves (its self-signed one), for the commands the demo shows.
fn cert(c: &Control) -> String {
    c.cert
        .as_ref()
        .map_or_else(|| "(plain HTTP)".into(), |p| p.display().to_string())
}

/// The served certificate's SHA-256 fingerprint, as control announced it.
fn fingerprint(c: &Control) -> &str {
    c.ready["tls"]["fingerprint_sha256"]
        .as_str()
        .unwrap_or_default()
}

/// Light, steady traffic for `--keep`, so the console's dashboard and segment map have something to show:
/// every few seconds the allowed and the denied conversations of the demo policy.
fn chatter(bed: &TestBed) -> Result<Vec<Background>> {
    let get = |from: &str, host: &str, port: &str| {
        format!("curl -s --max-time 1 -o /dev/null --interface {from} http://{host}:{port}/blob")
    };
    let a = format!(
        "while :; do {}; {}; {}; {}; ping -c 1 -W 1 {} >/dev/null; sleep 3; done",
        get(OFFICE, addr::B4, "5432"),
        get(addr::A4, SCADA, "8080"),
        get(addr::A4, SCADA, "502"),
        get(OFFICE, SCADA, "8080"),
        addr::B4
    );
    let b = format!(
        "while :; do ping -c 1 -W 1 -I {SCADA} {} >/dev/null; sleep 7; done",
        addr::A4
    );
    Ok(vec![
        bed.a.spawn(&["sh", "-c", &a])?,
        bed.b.spawn(&["sh", "-c", &b])?,
    ])
}
