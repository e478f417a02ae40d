//! A throwaway root without a container engine: a copy-on-write view of this machine (an overlay whose lower
//! layer is `/`, its upper layer on a tmpfs) in a mount namespace of its own, held open by one process. dpkg
//! installs into it for real — maintainer scripts, sysusers, conffiles and the dpkg database included — and
//! nothing reaches the machine's own file system; everything goes when the holder dies.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::Result;

pub struct Root {
    holder: Child,
    /// Where the overlay is mounted, inside the holder's namespace.
    base: PathBuf,
}

impl Root {
    pub fn new(name: &str) -> Result<Root> {
        let base = std::env::temp_dir().join(format!("bh-pkg-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&base)?;
        let b = base.display();
        // The tmpfs over `base` exists only in the holder's namespace; so do the overlay and the API file systems
        // mounted into it. `/run` and `/tmp` start empty, as after a boot.
        let script = format!(
            "set -e
             mount -t tmpfs tmpfs {b}
             mkdir {b}/upper {b}/work {b}/root
             mount -t overlay overlay -o lowerdir=/,upperdir={b}/upper,workdir={b}/work {b}/root
             mount -t proc proc {b}/root/proc
             mount --rbind /dev {b}/root/dev
             mount --rbind /sys {b}/root/sys
             mount -t tmpfs tmpfs {b}/root/run
             mount -t tmpfs tmpfs {b}/root/tmp
             echo ready
             exec sleep infinity"
        );
        // The holder dies with this test process (SIGKILL on the parent's death), taking the mounts with it.
        let mut holder = Command::new("setpriv")
            .args([
                "--pdeathsig",
                "KILL",
                "--",
                "unshare",
                "--mount",
                "--propagation",
                "private",
            ])
            .args(["--", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run setpriv/unshare (util-linux): {e}"))?;
        let mut line = String::new();
        BufReader::new(holder.stdout.take().expect("piped")).read_line(&mut line)?;
        if line.trim() != "ready" {
            let status = holder.wait()?;
            return Err(format!("the throwaway root could not be mounted ({status})").into());
        }
        Ok(Root { holder, base })
    }

    /// `path` (absolute, inside the root) as this process reaches it: through the holder's view.
    pub fn path(&self, path: &str) -> PathBuf {
        let inside = path.trim_start_matches('/');
        Path::new(&format!("/proc/{}/root", self.holder.id()))
            .join(self.base.strip_prefix("/").expect("absolute"))
            .join("root")
            .join(inside)
    }

    /// A command run chrooted into the root (as root; `args[0]` is looked up in the root's PATH).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.holder.id().to_string(), "-m", "--", "chroot"])
            .arg(self.base.join("root"))
            .args(args);
        c
    }

    /// Runs a command in the root; fails unless it succeeds.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let out = self.command(args).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            return Err(format!(
                "`{}` in the throwaway root failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(out)
    }

    /// Copies a file of this machine into the root.
    pub fn put(&self, from: &Path, to: &str) -> Result {
        std::fs::copy(from, self.path(to))
            .map_err(|e| format!("copy {} to {to}: {e}", from.display()))?;
        Ok(())
    }

    pub fn read(&self, path: &str) -> Result<String> {
        Ok(std::fs::read_to_string(self.path(path)).map_err(|e| format!("{path}: {e}"))?)
    }

    pub fn write(&self, path: &str, text: &str) -> Result {
        Ok(std::fs::write(self.path(path), text).map_err(|e| format!("{path}: {e}"))?)
    }

    /// The numeric id of a user or group of the root (`id -u` / `getent group`).
    pub fn uid(&self, user: &str) -> Result<u32> {
        let out = self.run(&["id", "-u", user])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    }

    pub fn gid(&self, group: &str) -> Result<u32> {
        let out = self.run(&["getent", "group", group])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(text
            .split(':')
            .nth(2)
            .ok_or_else(|| format!("getent group {group}: {text}"))?
            .trim()
            .parse()?)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
