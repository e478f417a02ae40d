//! The Debian packages, as an operator gets them: built by `cargo xtask package` (twice, as an older and a
//! newer version), their contents and modes, lintian, `systemd-analyze verify`; then installed with dpkg in a
//! throwaway root (`root.rs`), started as their units would start them (`unit.rs`) — the dataplane on TAP
//! devices without hugepages under the unit's capability set, control as the unprivileged `bulkhead` user —,
//! a commit through control's REST API, the owners and modes of every file they made, and an upgrade that
//! keeps the store, the tokens, the persisted policy and an edited conffile, the dataplane coming back
//! enforcing the same version. Needs root (mounts, dpkg, TAP devices); a missing tool is a failure.

mod root;
mod unit;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use protocol::{Request, Status};
use serde_json::{json, Value};

use root::Root;
use unit::Unit;

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const PACKAGES: [&str; 3] = ["bulkhead-dataplane", "bulkhead-control", "bulkhead-pktgen"];
const OLD: &str = "0.1.0-0";
const NEW: &str = "0.1.0-1";

/// The .deb files of one version.
struct Build {
    dir: PathBuf,
    version: &'static str,
}

impl Build {
    fn deb(&self, package: &str) -> PathBuf {
        self.dir
            .join(format!("{package}_{}_amd64.deb", self.version))
    }
}

/// Both versions, built once per test process with the documented command.
fn builds() -> &'static (Build, Build) {
    static BUILDS: OnceLock<(Build, Build)> = OnceLock::new();
    BUILDS.get_or_init(|| {
        let build = |version: &'static str| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("packages-{version}"));
            let _ = std::fs::remove_dir_all(&dir);
            let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
                .args(["package", "--deb-version", version, "--out"])
                .arg(&dir)
                .status()
                .expect("run xtask package");
            assert!(
                status.success(),
                "cargo xtask package --deb-version {version}: {status}"
            );
            Build { dir, version }
        };
        (build(OLD), build(NEW))
    })
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `dpkg-deb --contents`: path → (mode string, owner/group).
fn contents(deb: &Path) -> Result<Vec<(String, String, String)>> {
    let text = output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    Ok(text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[5].trim_start_matches('.').to_string(),
                f[0].to_string(),
                f[1].to_string(),
            )
        })
        .collect())
}

#[test]
fn contents_modes_conffiles_and_dependencies() -> Result {
    let (_, new) = builds();
    let expect: &[(&str, &[(&str, &str)])] = &[
        (
            "bulkhead-dataplane",
            &[
                ("/usr/bin/bulkhead-dataplane", "-rwxr-xr-x"),
                ("/etc/bulkhead/dataplane.toml", "-rw-r--r--"),
                (
                    "/usr/lib/systemd/system/bulkhead-dataplane.service",
                    "-rw-r--r--",
                ),
                ("/usr/lib/sysusers.d/bulkhead-dataplane.conf", "-rw-r--r--"),
                ("/usr/lib/tmpfiles.d/bulkhead-dataplane.conf", "-rw-r--r--"),
                ("/usr/share/doc/bulkhead-dataplane/copyright", "-rw-r--r--"),
                (
                    "/usr/share/doc/bulkhead-dataplane/changelog.Debian.gz",
                    "-rw-r--r--",
                ),
                (
                    "/usr/share/doc/bulkhead-dataplane/examples/dataplane.toml",
                    "-rw-r--r--",
                ),
            ],
        ),
        (
            "bulkhead-control",
            &[
                ("/usr/bin/bulkhead-control", "-rwxr-xr-x"),
                ("/etc/bulkhead/control.toml", "-rw-r--r--"),
                (
                    "/usr/lib/systemd/system/bulkhead-control.service",
                    "-rw-r--r--",
                ),
                ("/usr/lib/sysusers.d/bulkhead-control.conf", "-rw-r--r--"),
                ("/usr/share/doc/bulkhead-control/copyright", "-rw-r--r--"),
                ("/usr/share/bulkhead/web/", "drwxr-xr-x"),
            ],
        ),
        (
            "bulkhead-pktgen",
            &[
                ("/usr/bin/bulkhead-pktgen", "-rwxr-xr-x"),
                ("/usr/share/doc/bulkhead-pktgen/copyright", "-rw-r--r--"),
            ],
        ),
    ];
    for (package, files) in expect {
        let deb = new.deb(package);
        let listed = contents(&deb)?;
        for (path, mode) in *files {
            let found = listed.iter().find(|(p, _, _)| p == path);
            assert_eq!(
                found.map(|(_, m, o)| (m.as_str(), o.as_str())),
                Some((*mode, "0/0")),
                "{package}: {path}"
            );
        }
        // Nothing writable by others, nothing setuid.
        for (path, mode, _) in &listed {
            assert!(
                !mode.ends_with('w') && !mode.contains('s'),
                "{package}: {path} is {mode}"
            );
        }
        // Every file of the console, at its place.
        if *package == "bulkhead-control" {
            let web = workspace_root().join("web");
            for file in files_under(&web)? {
                let rel = file.strip_prefix(&web)?.display().to_string();
                let path = format!("/usr/share/bulkhead/web/{rel}");
                assert!(
                    listed
                        .iter()
                        .any(|(p, m, _)| *p == path && m == "-rw-r--r--"),
                    "bulkhead-control lacks {path}"
                );
            }
        }
        // Files in /etc are conffiles: dpkg keeps an edited one on upgrade.
        let conffiles = output(
            Command::new("dpkg-deb")
                .arg("--info")
                .arg(&deb)
                .arg("conffiles"),
        )
        .unwrap_or_default();
        let in_etc: Vec<&str> = files
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| p.starts_with("/etc/"))
            .collect();
        assert_eq!(
            conffiles.lines().collect::<Vec<_>>(),
            in_etc,
            "{package}: conffiles"
        );
        // DPDK 22.11's runtime packages, by name and version range.
        let depends = output(
            Command::new("dpkg-deb")
                .arg("--field")
                .arg(&deb)
                .arg("Depends"),
        )?;
        if *package != "bulkhead-control" {
            for lib in ["librte-eal23", "librte-ethdev23", "librte-mempool-ring23"] {
                assert!(
                    depends.contains(&format!("{lib} (>= 22.11)"))
                        && depends.contains(&format!("{lib} (<< 22.12)")),
                    "{package}: Depends: {depends}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn lintian_finds_nothing() -> Result {
    let (_, new) = builds();
    // Errors and warnings alike; the few warnings that do not apply are overridden in the packages, each with
    // its reason (packaging/*/lintian-overrides).
    let mut c = Command::new("lintian");
    c.args(["--fail-on", "error,warning"]);
    for p in PACKAGES {
        c.arg(new.deb(p));
    }
    let report = output(&mut c)?;
    assert!(
        !report
            .lines()
            .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "{report}"
    );
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files_under(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

/// dpkg -i in the root, with no terminal: a conffile question would fail the install rather than be answered.
fn install(root: &Root, build: &Build) -> Result {
    let mut args = vec!["dpkg".to_string(), "-i".into()];
    for p in PACKAGES {
        let inside = format!("/tmp/{p}_{}.deb", build.version);
        root.put(&build.deb(p), &inside)?;
        args.push(inside);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    root.run(&refs)?;
    for p in PACKAGES {
        let v = root.run(&["dpkg-query", "-W", "-f=${Version}", p])?;
        assert_eq!(String::from_utf8_lossy(&v.stdout), build.version, "{p}");
    }
    Ok(())
}

/// Mode bits, uid, gid and whether it is a socket.
fn stat(root: &Root, path: &str) -> Result<(u32, u32, u32, bool)> {
    let m = std::fs::symlink_metadata(root.path(path)).map_err(|e| format!("{path}: {e}"))?;
    Ok((
        m.mode() & 0o7777,
        m.uid(),
        m.gid(),
        m.file_type().is_socket(),
    ))
}

/// The enforced policy version, asked on the operators' socket as root.
fn enforced_version(root: &Root) -> Result<Option<u32>> {
    use std::io::{BufRead, BufReader, Write};
    let socket = root.path("/run/bulkhead/dataplane.sock");
    let stream = std::os::unix::net::UnixStream::connect(&socket)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut line = protocol::encode_request(None, &Request::Status {});
    line.push('\n');
    (&stream).write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    let status: Status = match protocol::decode_reply(&reply)? {
        Ok(s) => s,
        Err(refused) => return Err(format!("status refused: {refused:?}").into()),
    };
    Ok(status.policy_version)
}

/// The dataplane's packaged config, edited as an operator of this test bed would: TAP ports with names of
/// this run, no hugepages, a file prefix of its own.
fn edit_dataplane_config(root: &Root) -> Result<String> {
    let tag = std::process::id() % 100_000;
    let text = root
        .read("/etc/bulkhead/dataplane.toml")?
        .replace(
            "file_prefix = \"bulkhead\"",
            &format!("file_prefix = \"bh-pkg-{tag}\""),
        )
        .replace("hugepages = true ", "hugepages = false")
        .replace("memory_mb = 512", "memory_mb = 256")
        .replace("mbufs = 16383", "mbufs = 8191")
        .replace(
            "device = \"0000:03:00.0\"",
            &format!("device = \"net_tap0,iface=bhpk{tag}o\""),
        )
        .replace(
            "device = \"0000:03:00.1\"",
            &format!("device = \"net_tap1,iface=bhpk{tag}i\""),
        );
    for edited in ["hugepages = false", "net_tap0", "net_tap1", "bh-pkg-"] {
        assert!(
            text.contains(edited),
            "the packaged dataplane.toml changed shape: {edited}"
        );
    }
    root.write("/etc/bulkhead/dataplane.toml", &text)?;
    Ok(text)
}

/// Control on a port of its own choosing (its `ready` line names it).
fn edit_control_config(root: &Root) -> Result<String> {
    let text = root
        .read("/etc/bulkhead/control.toml")?
        .replace("listen = \"127.0.0.1:8180\"", "listen = \"127.0.0.1:0\"");
    assert!(
        text.contains("127.0.0.1:0"),
        "the packaged control.toml changed shape"
    );
    root.write("/etc/bulkhead/control.toml", &text)?;
    Ok(text)
}

/// Where control answers, from its ready line: its HTTPS URL and the certificate it serves (self-signed at
/// first start, in its state directory), which the test's curl trusts.
struct Endpoint {
    url: String,
    cacert: PathBuf,
}

impl Endpoint {
    fn of(root: &Root, ready: &str) -> Result<Endpoint> {
        let v: Value = serde_json::from_str(ready)?;
        let url = v["url"].as_str().ok_or("ready line without url")?;
        let cert = v["tls"]["cert"]
            .as_str()
            .ok_or("ready line without tls.cert")?;
        Ok(Endpoint {
            url: url.to_string(),
            cacert: root.path(cert),
        })
    }

    fn curl(&self) -> Command {
        let mut c = Command::new("curl");
        c.arg("-sS").arg("--cacert").arg(&self.cacert);
        c
    }
}

fn admin_token(root: &Root) -> Result<String> {
    let tokens = root.read("/var/lib/bulkhead-control/tokens")?;
    Ok(tokens
        .lines()
        .find_map(|l| l.strip_prefix("admin "))
        .ok_or("no admin token")?
        .trim()
        .to_string())
}

fn call(
    control: &Endpoint,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    etag: Option<&str>,
) -> Result<testbed::control::Response> {
    let raw = body.map(|b| b.to_string().into_bytes());
    let headers: Vec<(&str, &str)> = etag.map(|e| ("If-Match", e)).into_iter().collect();
    Ok(testbed::control::curl(
        control.curl(),
        &control.url,
        method,
        path,
        raw.as_deref(),
        &headers,
        Some(token),
    )?)
}

/// Effective capabilities of a process.
fn cap_eff(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or("no CapEff")?;
    Ok(u64::from_str_radix(hex.trim(), 16)?)
}

#[test]
fn installed_run_as_units_commit_and_upgrade() -> Result {
    let (old, new) = builds();
    let root = Root::new("install")?;
    for fresh in [
        "/etc/bulkhead",
        "/var/lib/bulkhead",
        "/var/lib/bulkhead-control",
    ] {
        assert!(
            !root.path(fresh).exists(),
            "{fresh} exists before the install: not a fresh root"
        );
    }
    install(&root, old)?;

    // The units as systemd reads them, next to the binaries they name.
    let units = ["bulkhead-dataplane.service", "bulkhead-control.service"]
        .map(|u| format!("/usr/lib/systemd/system/{u}"));
    let mut verify = vec!["systemd-analyze", "verify"];
    verify.extend(units.iter().map(String::as_str));
    let out = root.run(&verify)?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("bulkhead"), "systemd-analyze verify: {said}");

    // What the postinst scripts made: the bulkhead user and group; the dataplane unit not enabled (its ports
    // must be configured first), control's enabled.
    let bulkhead_uid = root.uid("bulkhead")?;
    let bulkhead_gid = root.gid("bulkhead")?;
    assert_ne!(bulkhead_uid, 0);
    let wants = "/etc/systemd/system/multi-user.target.wants";
    let enabled = |unit: &str| {
        root.path(&format!("{wants}/{unit}"))
            .symlink_metadata()
            .is_ok()
    };
    assert!(enabled("bulkhead-control.service"));
    assert!(!enabled("bulkhead-dataplane.service"));

    let dataplane_conf = edit_dataplane_config(&root)?;
    let control_conf = edit_control_config(&root)?;
    // At boot systemd-tmpfiles creates /run/dpdk, the one place the dataplane writes besides its own.
    root.run(&["systemd-tmpfiles", "--create", "bulkhead-dataplane.conf"])?;

    // A config that does not validate is refused before anything starts (exit 2, the field named).
    let dataplane_unit = Unit::installed(&root, "bulkhead-dataplane.service")?;
    let control_unit = Unit::installed(&root, "bulkhead-control.service")?;
    root.write(
        "/etc/bulkhead/control.toml",
        &control_conf.replace("keep = 5", "keep = \"five\""),
    )?;
    let (status, stderr) = control_unit
        .start_pre(&root)?
        .expect_err("a broken control.toml passed ExecStartPre");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("keep"), "{stderr}");
    root.write("/etc/bulkhead/control.toml", &control_conf)?;

    // Control first: it starts without a dataplane and reconciles when one appears.
    let mut control = control_unit.start(&root)?;
    let url = Endpoint::of(&root, &control.wait_line("\"ready\"")?)?;
    let mut dataplane = dataplane_unit.start(&root)?;
    dataplane.wait_line("\"ready\"")?;
    // Each holds exactly its unit's bounding set: the dataplane a few capabilities, control none.
    assert_eq!(cap_eff(dataplane.pid())?, dataplane_unit.capabilities()?);
    assert_eq!(cap_eff(control.pid())?, 0);
    assert_eq!(control_unit.capabilities()?, 0);
    assert_eq!(enforced_version(&root)?, None, "fail-closed until a commit");

    // A commit through the REST API reaches the dataplane through the group-owned reserved socket.
    let token = admin_token(&root)?;
    let policy: Value = serde_json::from_str(&std::fs::read_to_string(
        workspace_root().join("config/policy.json"),
    )?)?;
    let draft = call(&url, &token, "GET", "/api/v1/draft", None, None)?;
    let put = call(
        &url,
        &token,
        "PUT",
        "/api/v1/draft",
        Some(&policy),
        Some(&draft.etag()),
    )?;
    assert_eq!(put.status, 200, "{:?}", put.body);
    let committed = call(
        &url,
        &token,
        "POST",
        "/api/v1/commit",
        Some(&json!({"comment": "installed from packages"})),
        Some(&put.etag()),
    )?;
    assert_eq!(committed.status, 200, "{:?}", committed.body);
    let version = committed.body["version"].as_u64().ok_or("no version")? as u32;
    assert_eq!(enforced_version(&root)?, Some(version));
    // The console's files, served from the package's web directory.
    let page = testbed::control::curl(url.curl(), &url.url, "GET", "/", None, &[], None)?;
    assert_eq!(page.status, 200);
    assert!(
        page.body.as_str().unwrap_or_default().contains("<html"),
        "{:?}",
        page.body
    );

    // Owners and modes of everything the two processes made (and the conffiles).
    // (uid, gid) → (path, mode)
    type Owned<'a> = ((u32, u32), &'a [(&'a str, u32)]);
    let by_owner: [Owned; 3] = [
        (
            (0, 0),
            &[
                ("/etc/bulkhead/dataplane.toml", 0o644),
                ("/etc/bulkhead/control.toml", 0o644),
            ],
        ),
        (
            (0, bulkhead_gid),
            &[
                ("/var/lib/bulkhead", 0o700),
                ("/var/lib/bulkhead/policy.json", 0o600),
                ("/run/bulkhead", 0o750),
                ("/run/bulkhead/dataplane.sock", 0o600),
                ("/run/bulkhead/control.sock", 0o660),
            ],
        ),
        (
            (bulkhead_uid, bulkhead_gid),
            &[
                ("/var/lib/bulkhead-control", 0o700),
                ("/var/lib/bulkhead-control/versions", 0o700),
                ("/var/lib/bulkhead-control/tokens", 0o600),
                ("/var/lib/bulkhead-control/active.json", 0o600),
                ("/var/lib/bulkhead-control/audit.jsonl", 0o600),
                ("/var/log/bulkhead", 0o700),
                ("/var/log/bulkhead/flows.jsonl", 0o600),
            ],
        ),
    ];
    for ((uid, gid), files) in by_owner {
        for (path, mode) in files {
            let socket = path.ends_with(".sock");
            assert_eq!(stat(&root, path)?, (*mode, uid, gid, socket), "{path}");
        }
    }

    // Upgrade while both run, as dpkg does; then the restart the postinst scripts ask of systemd.
    let tokens_before = root.read("/var/lib/bulkhead-control/tokens")?;
    let active_before = root.read("/var/lib/bulkhead-control/active.json")?;
    let persisted_before = root.read("/var/lib/bulkhead/policy.json")?;
    install(&root, new)?;
    control.stop()?;
    dataplane.stop()?;
    assert_eq!(
        root.read("/etc/bulkhead/dataplane.toml")?,
        dataplane_conf,
        "edited conffile kept"
    );
    assert_eq!(
        root.read("/etc/bulkhead/control.toml")?,
        control_conf,
        "edited conffile kept"
    );
    assert_eq!(
        root.read("/var/lib/bulkhead-control/tokens")?,
        tokens_before
    );
    assert_eq!(
        root.read("/var/lib/bulkhead-control/active.json")?,
        active_before
    );
    assert_eq!(
        root.read("/var/lib/bulkhead/policy.json")?,
        persisted_before
    );

    // The dataplane alone comes back enforcing the same version; control adopts it and the old token works.
    let mut dataplane = dataplane_unit.start(&root)?;
    dataplane.wait_line("\"ready\"")?;
    assert_eq!(enforced_version(&root)?, Some(version));
    let mut control = control_unit.start(&root)?;
    let url = Endpoint::of(&root, &control.wait_line("\"ready\"")?)?;
    let active = call(&url, &token, "GET", "/api/v1/active", None, None)?;
    assert_eq!(active.status, 200, "{:?}", active.body);
    assert_eq!(
        active.body["version"].as_u64(),
        Some(u64::from(version)),
        "{:?}",
        active.body
    );
    assert_eq!(enforced_version(&root)?, Some(version));
    control.stop()?;
    dataplane.stop()?;

    // Purge removes configuration and state; the user stays.
    root.run(&[
        "dpkg",
        "--purge",
        "bulkhead-control",
        "bulkhead-dataplane",
        "bulkhead-pktgen",
    ])?;
    for gone in [
        "/etc/bulkhead",
        "/var/lib/bulkhead",
        "/var/lib/bulkhead-control",
        "/var/log/bulkhead",
    ] {
        assert!(!root.path(gone).exists(), "{gone} left after purge");
    }
    Ok(())
}
