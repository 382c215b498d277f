//! Build script of both binaries: embeds the git revision they were built from, for `--version`
//! and the images' `org.opencontainers.image.revision` label, which `scripts/build-images.sh`
//! checks against the binary so that a stale binary is never packed.
//!
//! `FLINK_INJECTOR_REVISION` wins (a build from a tarball or a Docker context without `.git`
//! passes it); otherwise `git rev-parse HEAD`; otherwise `unknown`.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=FLINK_INJECTOR_REVISION");
    let revision = match std::env::var("FLINK_INJECTOR_REVISION") {
        Ok(r) if !r.trim().is_empty() => r.trim().to_owned(),
        _ => {
            // Rebuilt when HEAD moves: HEAD itself, the branch it points at, and packed refs.
            for p in ["HEAD", "packed-refs"] {
                if let Some(path) = git(&["rev-parse", "--git-path", p]) {
                    println!("cargo:rerun-if-changed={}", absolute(&path).display());
                }
            }
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                if let Some(path) = git(&["rev-parse", "--git-path", &branch]) {
                    println!("cargo:rerun-if-changed={}", absolute(&path).display());
                }
            }
            git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=FLINK_INJECTOR_REVISION={revision}");
}

fn absolute(p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
    }
}
