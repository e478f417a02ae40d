//! The demo: the dataplane as a bump in the wire between two namespaces, with real clients crossing it.

use std::io::BufRead;
use std::time::Duration;

use testbed::{addr, Options, Side, TestBed};

use crate::util::{build_release, show, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Keep the bed up after the scripted traffic, until Enter is pressed, to try your own clients.
    #[arg(long)]
    keep: bool,
}

fn step(title: &str) {
    println!("\n=== {title}");
}

/// Runs a client in a namespace, showing the command and its output.
fn client(side: &Side, args: &[&str]) -> Result {
    let mut cmd = side.command(args[0]);
    cmd.args(&args[1..]);
    println!("$ {}", show(&cmd));
    let status = cmd.status()?;
    if !status.success() {
        return Err(format!("`{}` failed ({status})", args.join(" ")).into());
    }
    Ok(())
}

pub fn run(args: &Args) -> Result {
    let bin = build_release(&["bulkhead-dataplane"])?;
    let mut opts = Options::new(bin.join("bulkhead-dataplane"));
    opts.stats_interval_ms = 1000;
    step(
        "Starting bulkhead-dataplane on two TAP devices, each moved into its own network namespace",
    );
    let mut bed = TestBed::start(&opts)?;
    println!(
        "  {} [{} {} {}]  <== bulkhead-dataplane ==>  [{} {} {}] {}",
        bed.a.netns,
        bed.a.iface,
        addr::A4,
        addr::A6,
        bed.b.iface,
        addr::B4,
        addr::B6,
        bed.b.netns
    );
    println!("  config: {}", bed.dir.join("dataplane.toml").display());
    println!("  ready: {}", bed.ready());

    step("ICMP both ways, IPv4 and IPv6");
    client(&bed.a, &["ping", "-c", "3", "-i", "0.2", addr::B4])?;
    client(&bed.b, &["ping", "-c", "3", "-i", "0.2", addr::A4])?;
    client(&bed.a, &["ping", "-c", "3", "-i", "0.2", addr::B6])?;

    step("HTTP: a 32 MiB download from a server behind the gateway");
    let www = bed.dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("blob"), vec![0x5a; 32 << 20])?;
    let _http = bed.b.spawn(&[
        "python3",
        "-m",
        "http.server",
        "8080",
        "--bind",
        addr::B4,
        "--directory",
        www.to_str().unwrap_or("."),
    ])?;
    bed.b.wait_listening(8080)?;
    client(
        &bed.a,
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "downloaded %{size_download} bytes at %{speed_download} bytes/s\n",
            &format!("http://{}:8080/blob", addr::B4),
        ],
    )?;

    step("iperf3: 5 seconds of TCP through the gateway");
    let _iperf = bed.b.spawn(&["iperf3", "-s", "-1", "-B", addr::B4])?;
    bed.b.wait_listening(5201)?;
    client(&bed.a, &["iperf3", "-c", addr::B4, "-t", "5", "-f", "m"])?;

    step("Live counters, read from the running workers (one JSON report per second on the dataplane's stdout)");
    let live = bed.wait_stats(Duration::from_secs(5), |_| true)?;
    println!("{}", serde_json::to_string_pretty(&live)?);

    if args.keep {
        step("The bed stays up. Try, in another shell:");
        println!("  ip netns exec {} ping {}", bed.a.netns, addr::B4);
        println!(
            "  ip netns exec {} iperf3 -s   # and: ip netns exec {} iperf3 -c {}",
            bed.b.netns,
            bed.a.netns,
            addr::B4
        );
        println!("Press Enter to stop.");
        let _ = std::io::stdin().lock().lines().next();
    }

    step("Stopping (SIGTERM): the dataplane stops its ports and prints its counters");
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
