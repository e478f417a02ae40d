//! The demo: the dataplane as a bump in the wire in front of a legacy OT host, enforcing the example policy
//! (`config/policy.json`) on real clients, observed through its control socket.

use std::io::BufRead;
use std::time::Duration;

use serde_json::{json, Value};
use testbed::{addr, Options, Side, TestBed};

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

fn control(bed: &TestBed, request: Value) -> Result<Value> {
    let reply = bed.control(request)?;
    if reply["ok"] != true {
        return Err(format!("control socket: {reply}").into());
    }
    Ok(reply["result"].clone())
}

pub fn run(args: &Args) -> Result {
    let bin = build_release(&["bulkhead-dataplane"])?;
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
    println!("  status: {}", control(&bed, json!({"op": "status"}))?);

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
    let counters = control(&bed, json!({"op": "counters"}))?;
    let t = &counters["totals"];
    println!(
        "  packets rx {} tx {}; flows created {}, active {}; would-deny {}",
        t["rx_packets"], t["tx_packets"], t["flows_created"], t["flows_active"], t["would_deny"]
    );
    println!("  drops by reason: {}", t["drops"]);
    println!("  per rule (id name: packets bytes flows):");
    for r in counters["rules"].as_array().into_iter().flatten() {
        println!(
            "    {:>3} {:<22} {:>8} {:>10} {:>5}",
            r["rule_id"],
            r["name"].as_str().unwrap_or(""),
            r["packets"],
            r["bytes"],
            r["flows"]
        );
    }
    let flows = control(&bed, json!({"op": "flows", "limit": 5}))?;
    println!("  tracked connections (first 5):");
    for f in flows["flows"].as_array().into_iter().flatten() {
        println!(
            "    {} {}:{} -> {}:{} {} rule {}",
            f["proto"], f["src"], f["sport"], f["dst"], f["dport"], f["state"], f["rule_id"]
        );
    }
    let events = control(&bed, json!({"op": "events", "max": 1000}))?;
    println!("  flow log (new and denied flows):");
    for e in events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] != "closed")
        .take(12)
    {
        println!(
            "    {:<6} {:<10} {}:{} -> {}:{} proto {} rule {} ({} -> {})",
            e["kind"].as_str().unwrap_or(""),
            e["verdict"].as_str().unwrap_or(""),
            e["src"].as_str().unwrap_or(""),
            e["sport"],
            e["dst"].as_str().unwrap_or(""),
            e["dport"],
            e["proto"],
            e["rule_id"],
            e["src_segments"],
            e["dst_segments"]
        );
    }

    if args.keep {
        step("The bed stays up. Try, in another shell:");
        println!("  ip netns exec {} ping {}", bed.a.netns, addr::B4);
        let socket = bed.control_socket();
        println!("  echo '{{\"v\":1,\"op\":\"counters\"}}' | python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(\"{}\"); s.sendall(sys.stdin.buffer.read()); print(s.makefile().readline())'", socket.display());
        println!("Press Enter to stop.");
        let _ = std::io::stdin().lock().lines().next();
    }
    drop(servers);

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
