//! Running the images that `scripts/build-images.sh` wrote (`target/images/*.oci.tar`) with
//! Debian's podman and runc, as a kubelet would run them: host network only, the image's own
//! user, a read-only root filesystem.
//!
//! What this machine allows (and the README repeats): cgroups v1 and no CAP_SYS_RESOURCE for
//! root, so podman runs a container only with runc, the cgroupfs manager and explicit ulimits no
//! higher than the caller's hard limits; its defaults ask for more and fail. Storage is private
//! to each test (vfs in a temp dir): nothing of the machine's container storage is used.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};

/// An OCI archive under `target/images/`; missing is an error that says how to make it.
pub fn image_archive(name: &str) -> Result<PathBuf> {
    let path = crate::target_dir()
        .join("images")
        .join(format!("{name}.oci.tar"));
    ensure!(
        path.exists(),
        "{} is missing: run scripts/build-images.sh (scripts/test.sh does)",
        path.display()
    );
    Ok(path)
}

/// The revision `scripts/build-images.sh` packed (the image's revision label).
pub fn packed_revision(name: &str) -> Result<String> {
    let path = crate::target_dir()
        .join("images")
        .join(format!("{name}.revision"));
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}

/// The hard limit of one resource of this process, from /proc/self/limits (no `unsafe`).
fn hard_limit(resource: &str) -> Result<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with(resource))
        .with_context(|| format!("no '{resource}' in /proc/self/limits"))?;
    let hard = line[resource.len()..]
        .split_whitespace()
        .nth(1)
        .context("malformed /proc/self/limits")?;
    Ok(if hard == "unlimited" {
        u64::MAX
    } else {
        hard.parse()?
    })
}

/// A private podman: its own storage and run directories, removed with it.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Result<Self> {
        let podman = Command::new("podman").arg("--version").output();
        ensure!(
            podman.as_ref().is_ok_and(|o| o.status.success()),
            "podman is missing: scripts/install-test-deps.sh installs it (Debian: apt-get install podman runc)"
        );
        Ok(Self {
            dir: tempfile::tempdir()?,
        })
    }

    /// `podman` with this instance's storage and the runtime settings this machine needs.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.path().join("storage"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", "vfs", "--runtime", "runc"])
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .arg("--tmpdir")
            .arg(self.dir.path().join("tmp"));
        c
    }

    /// [`Self::cmd`] as words, for helpers that take a wrapper command line.
    pub fn command_line(&self) -> Vec<String> {
        let c = self.cmd();
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    /// Runs podman with `args` and returns its stdout; a failure carries its stderr.
    pub fn output(&self, args: &[&str]) -> Result<String> {
        let out = self
            .cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running podman")?;
        if !out.status.success() {
            bail!(
                "podman {}: {}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Loads an OCI archive and returns the image's id.
    pub fn load(&self, archive: &Path) -> Result<String> {
        let path = archive.to_str().context("archive path is not UTF-8")?;
        let out = self.output(&["load", "-q", "-i", path])?;
        // "Loaded image: <ref>" (podman 4.3) or "Loaded image(s): <ref>".
        let reference = out
            .lines()
            .find_map(|l| l.split_once(": ").map(|(_, r)| r.trim().to_owned()))
            .with_context(|| format!("podman load printed no image: {out}"))?;
        let id = self.output(&["image", "inspect", "--format", "{{.Id}}", &reference])?;
        Ok(id.trim().to_owned())
    }

    /// The arguments of `podman run` up to (not including) the image: a named, removed-on-exit
    /// container on the host network with a read-only root (no tmpfs added, as a pod's
    /// `readOnlyRootFilesystem: true`), the image's own user, every capability dropped,
    /// no privilege escalation, and `mounts` (host path, container path, read-only?).
    pub fn run_args(&self, name: &str, mounts: &[(&Path, &str, bool)]) -> Result<Vec<String>> {
        // Seen here with podman 4.3 and runc 1.1: an nproc of half the caller's hard limit or
        // more is refused ("error setting rlimit type 6"), a quarter works. 16384 of each is
        // plenty for one binary.
        let nofile = (hard_limit("Max open files")? / 4).min(16_384);
        let nproc = (hard_limit("Max processes")? / 4).min(16_384);
        let mut args: Vec<String> = [
            "run",
            "--rm",
            "--name",
            name,
            "--network",
            "host",
            "--read-only",
            "--read-only-tmpfs=false",
            "--cap-drop",
            "all",
            "--security-opt",
            "no-new-privileges",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("--ulimit".into());
        args.push(format!("nofile={nofile}:{nofile}"));
        args.push("--ulimit".into());
        args.push(format!("nproc={nproc}:{nproc}"));
        for (host, inside, ro) in mounts {
            let host = host.to_str().context("mount path is not UTF-8")?;
            args.push("--volume".into());
            args.push(format!("{host}:{inside}{}", if *ro { ":ro" } else { "" }));
        }
        Ok(args)
    }

    /// The host pid of a running container's first process.
    pub fn pid(&self, name: &str) -> Result<u32> {
        let out = self.output(&["inspect", "--format", "{{.State.Pid}}", name])?;
        let pid: u32 = out.trim().parse().context("container pid")?;
        ensure!(pid > 0, "container {name} is not running");
        Ok(pid)
    }

    /// A label of an image.
    pub fn label(&self, image: &str, label: &str) -> Result<String> {
        let out = self.output(&[
            "image",
            "inspect",
            "--format",
            &format!("{{{{index .Labels \"{label}\"}}}}"),
            image,
        ])?;
        Ok(out.trim().to_owned())
    }

    /// Removes a container whatever its state (a test's clean-up; errors ignored: it may be gone).
    pub fn remove(&self, name: &str) {
        let _ = self
            .cmd()
            .args(["rm", "-f", "-t", "0", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The real uid and gid of a process, from /proc/PID/status.
pub fn process_ids(pid: u32) -> Result<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| -> Result<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .with_context(|| format!("no {key} in /proc/{pid}/status"))?
            .parse()
            .context("uid")
    };
    Ok((field("Uid:")?, field("Gid:")?))
}

/// Whether the root filesystem a process sees is mounted read-only (its /proc/PID/mountinfo).
pub fn root_is_read_only(pid: u32) -> Result<bool> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    // Fields: id parent major:minor root mount-point options ...; the last "/" mount wins.
    let options = info
        .lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4) == Some(&"/")).then(|| f.get(5).map(|o| o.to_string()))
        })
        .flatten()
        .with_context(|| format!("no / mount in /proc/{pid}/mountinfo"))?;
    Ok(options.split(',').any(|o| o == "ro"))
}

/// Gives a tree to the images' user (65532), as a kubelet's fsGroup or an emptyDir would let it
/// read and write what is mounted.
pub fn give_to_image_user(path: &Path) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(65532), Some(65532))
        .with_context(|| format!("chown {}", path.display()))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            give_to_image_user(&entry?.path())?;
        }
    }
    Ok(())
}

/// Removes the named container when dropped, so a failing test leaves nothing running.
pub struct RemoveOnDrop<'a> {
    pub podman: &'a Podman,
    pub name: String,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        self.podman.remove(&self.name);
    }
}
