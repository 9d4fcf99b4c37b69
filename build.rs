//! Rebuilds the crate when a migration changes: `embed_migrations!` reads `migrations/` at compile time. Also
//! sets `OFFBOARD_GIT_COMMIT` (the `commit` label of `offboard_build_info` on `/metrics`) when the source is a
//! git checkout and `git` is installed, unless the builder set it; a build from a tarball or in a container without
//! `.git` says `unknown`.

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
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=OFFBOARD_GIT_COMMIT");
    if std::env::var("OFFBOARD_GIT_COMMIT").is_ok_and(|v| !v.trim().is_empty()) {
        // Set by whoever builds (a CI job or `docker build --build-arg`): passed through as is.
        return;
    }
    // Set even when git cannot say (an empty variable from docker compose must not name the build "").
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=OFFBOARD_GIT_COMMIT={commit}");
    // Build again when HEAD moves: HEAD itself (a checkout) and the branch it names (a commit).
    let mut watched = vec!["HEAD".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
