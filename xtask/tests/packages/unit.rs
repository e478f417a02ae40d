//! Starting a packaged binary as its systemd unit would, without systemd: the installed unit file is read,
//! and its credentials (User=, Group=, CapabilityBoundingSet=, NoNewPrivileges=, UMask=), directories
//! (StateDirectory=, RuntimeDirectory=, LogsDirectory= with their modes and owners), clean environment and
//! command lines (ExecStartPre=, then ExecStart=) are applied with setpriv in the throwaway root. What only
//! systemd itself does (the device cgroup, the read-only file system of ProtectSystem=, ...) is left to
//! `systemd-analyze verify`.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::root::Root;
use crate::Result;

/// The `[Service]` settings of a unit file, in order.
pub struct Unit {
    pub name: String,
    settings: Vec<(String, String)>,
}

impl Unit {
    /// The unit as installed in the root.
    pub fn installed(root: &Root, name: &str) -> Result<Unit> {
        let text = root.read(&format!("/usr/lib/systemd/system/{name}"))?;
        let mut section = "";
        let mut settings = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(s) = line.strip_prefix('[') {
                section = s.trim_end_matches(']');
                continue;
            }
            if section == "Service" {
                let (k, v) = line
                    .split_once('=')
                    .ok_or_else(|| format!("{name}: not a setting: {line}"))?;
                settings.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        Ok(Unit {
            name: name.into(),
            settings,
        })
    }

    pub fn values(&self, key: &str) -> Vec<&str> {
        self.settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn value(&self, key: &str) -> Option<&str> {
        self.values(key).last().copied()
    }

    /// CapabilityBoundingSet= as a mask (the capabilities the units name).
    pub fn capabilities(&self) -> Result<u64> {
        let mut mask = 0;
        for cap in self
            .value("CapabilityBoundingSet")
            .unwrap_or_default()
            .split_whitespace()
        {
            let bit = match cap {
                "CAP_NET_ADMIN" => 12,
                "CAP_NET_RAW" => 13,
                "CAP_IPC_LOCK" => 14,
                "CAP_SYS_RAWIO" => 17,
                "CAP_SYS_ADMIN" => 21,
                _ => return Err(format!("{}: add {cap} to the test's table", self.name).into()),
            };
            mask |= 1u64 << bit;
        }
        Ok(mask)
    }

    fn user(&self) -> &str {
        self.value("User").unwrap_or("root")
    }

    fn group(&self) -> &str {
        self.value("Group").unwrap_or(self.user())
    }

    /// What systemd does before the first command: the unit's directories, with its owner and modes.
    fn make_directories(&self, root: &Root) -> Result {
        let owner = format!("{}:{}", self.user(), self.group());
        for (key, base) in [
            ("StateDirectory", "/var/lib"),
            ("RuntimeDirectory", "/run"),
            ("LogsDirectory", "/var/log"),
        ] {
            let mode = self
                .value(&format!("{key}Mode"))
                .unwrap_or("0755")
                .to_string();
            for dirs in self.values(key) {
                for dir in dirs.split_whitespace() {
                    let path = format!("{base}/{dir}");
                    root.run(&["mkdir", "-p", &path])?;
                    root.run(&["chown", &owner, &path])?;
                    root.run(&["chmod", &mode, &path])?;
                }
            }
        }
        Ok(())
    }

    /// `command` (an Exec line) under the unit's credentials, umask and clean environment.
    fn command(&self, root: &Root, command: &str) -> Result<Command> {
        if command.contains(['"', '\'', '$', '%']) {
            return Err(format!(
                "{}: quoting and specifiers are not emulated: {command}",
                self.name
            )
            .into());
        }
        let mut args = vec![
            "env".to_string(),
            "-i".into(),
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "setpriv".into(),
            format!("--reuid={}", self.user()),
            format!("--regid={}", self.group()),
            "--init-groups".into(),
            "--inh-caps=-all".into(),
        ];
        if let Some(caps) = self.value("CapabilityBoundingSet") {
            let mut set = String::from("-all");
            for cap in caps.split_whitespace() {
                let name = cap
                    .strip_prefix("CAP_")
                    .ok_or_else(|| format!("{}: not a capability: {cap}", self.name))?;
                set.push_str(&format!(",+{}", name.to_lowercase()));
            }
            args.push(format!("--bounding-set={set}"));
        }
        if self.value("NoNewPrivileges") == Some("yes") {
            args.push("--no-new-privs".into());
        }
        args.extend(["--", "sh", "-c"].map(String::from));
        args.push(format!(
            "umask {} && exec \"$@\"",
            self.value("UMask").unwrap_or("0022")
        ));
        args.push("sh".into());
        args.extend(command.split_whitespace().map(String::from));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Ok(root.command(&refs))
    }

    /// Every ExecStartPre= to completion; the first failure is returned with its stderr.
    pub fn start_pre(&self, root: &Root) -> Result<Result<(), (ExitStatus, String)>> {
        self.make_directories(root)?;
        for pre in self.values("ExecStartPre") {
            let out = self.command(root, pre)?.stdin(Stdio::null()).output()?;
            if !out.status.success() {
                return Ok(Err((
                    out.status,
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )));
            }
        }
        Ok(Ok(()))
    }

    /// ExecStartPre= (which must pass), then ExecStart=, its stdout read line by line (the journal's view).
    pub fn start(&self, root: &Root) -> Result<Service> {
        if let Err((status, stderr)) = self.start_pre(root)? {
            return Err(format!("{}: ExecStartPre failed ({status}): {stderr}", self.name).into());
        }
        let exec = self
            .value("ExecStart")
            .ok_or_else(|| format!("{}: no ExecStart", self.name))?;
        let mut child = self
            .command(root, exec)?
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let lines = read_lines(child.stdout.take().expect("piped"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Ok(Service {
            name: self.name.clone(),
            child: Some(child),
            lines,
            stderr,
        })
    }
}

/// A unit's main process (nsenter, chroot, env, setpriv and sh all exec, so this is the binary itself).
pub struct Service {
    name: String,
    child: Option<Child>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Service {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The first stdout line holding `needle` (the `ready` event), or the reason there is none.
    pub fn wait_line(&mut self, needle: &str) -> Result<String> {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(120)) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(_) => {
                    let status = self
                        .child
                        .take()
                        .map(|mut c| testbed::terminate(&mut c, testbed::STOP_GRACE));
                    return Err(format!(
                        "{} never printed {needle} ({status:?}); stderr:\n{}",
                        self.name,
                        self.stderr.lock().unwrap()
                    )
                    .into());
                }
            }
        }
    }

    /// SIGTERM, as `systemctl stop` sends; fails unless the process exits cleanly.
    pub fn stop(mut self) -> Result {
        let mut child = self.child.take().expect("running");
        let status = testbed::terminate(&mut child, testbed::STOP_GRACE)?;
        if !status.success() {
            let stderr = self.stderr.lock().unwrap();
            return Err(format!("{} stopped with {status}; stderr:\n{stderr}", self.name).into());
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = testbed::terminate(&mut child, testbed::STOP_GRACE);
        }
    }
}

fn read_lines(stdout: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
