//! The README's walkthroughs, run exactly as written, so they cannot rot.
//!
//! **The convention** (for whoever edits README.md):
//! - A walkthrough is a fenced ```` ```bash ```` block on the line right after an HTML comment
//!   `<!-- walkthrough: NAME -->` (invisible once rendered). Every `bash` block that starts a server in the
//!   background (`serve &`) must be one; other blocks are reference snippets and are not run.
//! - Inside a walkthrough, a line that begins with `#   ` (a hash and three spaces) is output the README promises
//!   for the commands above it; `…` stands for any text within one line. The test checks that these lines appear,
//!   in this order, in what the block printed (standard output and standard error together, as a terminal shows
//!   them). Any other comment is just a comment.
//! - A walkthrough must work after the previous one, in the same directory: it starts from a clean state (removes
//!   an earlier database and development key), waits for `/readyz` after starting a server, and stops what it
//!   started at its end. It must exit 0 (a command shown failing on purpose is written `cmd || echo "exit $?"`).
//!
//! **How they run**: in README order, each in its own `bash` with `set -euo pipefail` put before it, all in one
//! temporary directory, with a clean environment (`PATH` and `HOME` only: no `OFFBOARD_*` variable, no
//! configuration file). `cargo` on `PATH` is a shim: the README's `cargo run [-q] --release -- ARGS` would need a
//! release build, too slow for a test, so the shim `exec`s the debug binary this test was built with
//! (`env!("CARGO_BIN_EXE_offboard")`) with `ARGS`; any other `cargo` command fails the block. Everything else
//! (`curl`, `jq`, `sqlite3`, `kill`, …) is the machine's own. Each block runs in a process group of its own,
//! killed (SIGKILL) when the block ends, passed or failed, so no server outlives it; a block that takes longer
//! than [`BLOCK_TIMEOUT`] fails.
//!
//! **Ports**: the walkthroughs use the README's fixed loopback ports (8080 for offboard, 9001 for the receiver:
//! every `127.0.0.1:PORT` a block names). Other tests listen on port 0 and the other test of this binary on
//! nothing; the walkthroughs run one after the other. The test fails at once, naming the port, when one is already
//! taken on this machine (stop what listens there), and checks that each block released its ports at its end.
//!
//! **Tools**: `bash`, `curl`, `jq`, `sqlite3` (the README's prerequisites). When one is missing, the test fails
//! under `CI=true` (`.ci/run` installs them) and otherwise prints `SKIPPED` and passes.
//!
//! None of the walkthroughs needs PostgreSQL: they run on the default SQLite file, as a newcomer would.
//! Why it is built this way: `docs/decisions/0035-readme-walkthroughs-run-verbatim.md`.
#![expect(
    clippy::expect_used,
    reason = "test code: a panic is a test failure with its message"
)]

use std::fmt::Write as _;
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a walkthrough may run (the machine running the tests may be busy).
const BLOCK_TIMEOUT: Duration = Duration::from_secs(180);

const MARKER: &str = "<!-- walkthrough: ";

/// One walkthrough of the README.
struct Walkthrough {
    name: String,
    /// Line of the opening fence in README.md (1-based), for messages.
    line: usize,
    script: String,
}

impl Walkthrough {
    /// The output lines it promises, split at `…` into the pieces that must appear in order on one line.
    fn expected(&self) -> Vec<(String, Vec<String>)> {
        self.script
            .lines()
            .filter_map(|l| l.strip_prefix("#   "))
            .map(|text| {
                let pieces: Vec<String> = text
                    .split('…')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect();
                (text.to_owned(), pieces)
            })
            .filter(|(_, pieces)| !pieces.is_empty())
            .collect()
    }

    /// The loopback ports it names (`127.0.0.1:PORT`).
    fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .script
            .match_indices("127.0.0.1:")
            .filter_map(|(at, m)| {
                let rest = self.script.get(at + m.len()..)?;
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// The walkthroughs of `readme`, in order. Panics on a marker not followed by a `bash` block, an unclosed block,
/// or a `bash` block that starts a server in the background without being a walkthrough.
fn walkthroughs(readme: &str) -> Vec<Walkthrough> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(line) = lines.get(i) {
        let fence = line.trim_start();
        if !fence.starts_with("```") {
            i += 1;
            continue;
        }
        let end = (i + 1..lines.len())
            .find(|&j| lines.get(j).is_some_and(|l| l.trim_start() == "```"))
            .unwrap_or_else(|| panic!("README.md:{}: a fenced block is never closed", i + 1));
        let body = lines.get(i + 1..end).unwrap_or_default().join("\n");
        let marker = i
            .checked_sub(1)
            .and_then(|p| lines.get(p))
            .and_then(|p| p.trim().strip_prefix(MARKER))
            .map(|rest| {
                rest.strip_suffix("-->")
                    .unwrap_or_else(|| panic!("README.md:{i}: a walkthrough marker must end with `-->`"))
                    .trim()
                    .to_owned()
            });
        match marker {
            Some(name) => {
                assert!(
                    fence == "```bash",
                    "README.md:{}: walkthrough `{name}` must be a ```bash block",
                    i + 1
                );
                assert!(!name.is_empty(), "README.md:{i}: a walkthrough needs a name");
                found.push(Walkthrough {
                    name,
                    line: i + 1,
                    script: body,
                });
            }
            None => assert!(
                !(fence == "```bash" && body.contains("serve &")),
                "README.md:{}: this block starts a server: mark it `{MARKER}NAME -->` so tests/readme.rs runs it",
                i + 1
            ),
        }
        i = end + 1;
    }
    // A marker anywhere else (not right before a fence) would silently run nothing.
    let markers = lines.iter().filter(|l| l.trim().starts_with(MARKER)).count();
    assert_eq!(
        markers,
        found.len(),
        "README.md: every `{MARKER}NAME -->` line must come right before a ```bash block"
    );
    found
}

/// Finds `pieces` in order on one line of `output`, at or after byte `from`; returns where the match ends.
fn find_on_one_line(output: &str, from: usize, pieces: &[String]) -> Option<usize> {
    let (first, rest) = pieces.split_first()?;
    let mut search = from;
    while let Some(found) = output.get(search..).and_then(|s| s.find(first.as_str())) {
        let start = search + found;
        let line_end = output
            .get(start..)
            .and_then(|s| s.find('\n'))
            .map_or(output.len(), |n| start + n);
        let mut at = start + first.len();
        let mut ok = true;
        for piece in rest {
            let Some(n) = output.get(at..line_end).and_then(|s| s.find(piece.as_str())) else {
                ok = false;
                break;
            };
            at += n + piece.len();
        }
        if ok {
            return Some(at);
        }
        search = start + first.len();
    }
    None
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The `cargo` shim: `cargo run [-q|--quiet] [--release] -- ARGS` runs the test's debug binary.
fn write_cargo_shim(dir: &Path) {
    let bin = env!("CARGO_BIN_EXE_offboard").replace('\'', r"'\''");
    let script = format!(
        r#"#!/usr/bin/env bash
# tests/readme.rs: the README's `cargo run --release -- ARGS`, mapped to the already-built debug binary.
if [ "${{1-}}" = run ]; then
  shift
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case "$1" in
      -q|--quiet|--release) shift ;;
      *) echo "tests/readme.rs cargo shim: unsupported option of cargo run: $1" >&2; exit 97 ;;
    esac
  done
  [ $# -gt 0 ] && shift
  exec '{bin}' "$@"
fi
echo "tests/readme.rs cargo shim: only 'cargo run' is mapped, not: cargo $*" >&2
exit 97
"#
    );
    let path = dir.join("cargo");
    std::fs::write(&path, script).expect("write the cargo shim");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod the cargo shim");
}

/// Kills a block's whole process group when dropped, whatever happened.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // The block's bash leads the group; background servers stay in it (no job control in a script).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text.get(start..).unwrap_or(text)
}

/// Runs one walkthrough in `work`; returns its combined output, or why it failed.
fn run(w: &Walkthrough, work: &Path, logs: &Path, path_var: &str, home: &str) -> Result<String, String> {
    let log_path = logs.join(format!("{}.log", w.name));
    let log = File::create(&log_path).expect("create the block's log");
    let child = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{}\n", w.script))
        .current_dir(work)
        .env_clear()
        .env("PATH", path_var)
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start bash");
    let mut group = Group(child);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = group.0.try_wait().expect("wait for bash") {
            break Some(status);
        }
        if started.elapsed() > BLOCK_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Checked before the group is killed: the block itself must have stopped what it started.
    let still_taken: Vec<u16> = if status.is_some_and(|s| s.success()) {
        w.ports().into_iter().filter(|p| !port_is_free(*p)).collect()
    } else {
        Vec::new()
    };
    drop(group);
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let show = |why: String| {
        format!(
            "README.md:{} walkthrough `{}`: {why}\n--- its output (the end) ---\n{}",
            w.line,
            w.name,
            tail(&output, 12_000)
        )
    };
    match status {
        None => return Err(show(format!("still running after {BLOCK_TIMEOUT:?}"))),
        Some(s) if !s.success() => return Err(show(format!("bash exited with {s}"))),
        Some(_) => {}
    }
    let mut at = 0;
    for (text, pieces) in w.expected() {
        match find_on_one_line(&output, at, &pieces) {
            Some(end) => at = end,
            None => {
                return Err(show(format!(
                    "the README promises this output, not found (in order, after the previous one):\n    {text}"
                )));
            }
        }
    }
    if let Some(port) = still_taken.first() {
        return Err(show(format!(
            "127.0.0.1:{port} was still taken when the block ended: it must stop what it started"
        )));
    }
    Ok(output)
}

#[test]
fn readme_walkthroughs_run_back_to_back() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let all = walkthroughs(&readme);
    assert!(
        all.len() >= 2,
        "README.md: expected the walkthroughs (`{MARKER}NAME -->` before a ```bash block), found {}",
        all.len()
    );
    for w in &all {
        assert!(
            w.script.contains("/readyz"),
            "README.md:{} walkthrough `{}`: wait for /readyz after starting the server",
            w.line,
            w.name
        );
    }

    let missing: Vec<&str> = ["bash", "curl", "jq", "sqlite3"]
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    if !missing.is_empty() {
        let message = format!(
            "the README walkthroughs need {} (apt-get install curl jq sqlite3)",
            missing.join(", ")
        );
        assert!(!in_ci(), "{message}; CI=true, so this fails");
        eprintln!("SKIPPED readme_walkthroughs_run_back_to_back: {message}");
        return;
    }

    let mut ports: Vec<u16> = all.iter().flat_map(Walkthrough::ports).collect();
    ports.sort_unstable();
    ports.dedup();
    for port in &ports {
        assert!(
            port_is_free(*port),
            "127.0.0.1:{port} is taken on this machine; the README walkthroughs listen there: stop what listens \
             on it and run again"
        );
    }

    let work = tempfile::tempdir().expect("temp dir");
    let shim = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::tempdir().expect("temp dir");
    write_cargo_shim(shim.path());
    let path_var = format!(
        "{}:{}",
        shim.path().display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned())
    );
    let home = work.path().display().to_string();

    let mut summary = String::new();
    for w in &all {
        let started = Instant::now();
        match run(w, work.path(), logs.path(), &path_var, &home) {
            Ok(_) => {
                let _ = writeln!(
                    summary,
                    "walkthrough `{}` (README.md:{}): ok, {} promised output line(s), {:.1} s",
                    w.name,
                    w.line,
                    w.expected().len(),
                    started.elapsed().as_secs_f64()
                );
            }
            Err(why) => panic!("{summary}{why}"),
        }
    }
    eprint!("{summary}");
}

#[test]
fn promised_output_matches_within_one_line_and_in_order() {
    let out = "{\"a\":1,\"b\":2}{\"c\":3}\nnext line x\n";
    let pieces = |s: &str| -> Vec<String> {
        s.split('…')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let end = find_on_one_line(out, 0, &pieces("{\"a\":…,\"b\":2}")).expect("matches");
    assert!(find_on_one_line(out, end, &pieces("{\"c\":3}")).is_some());
    // Order: what came before the last match is not searched again.
    assert!(find_on_one_line(out, end, &pieces("{\"a\":1")).is_none());
    // `…` never spans a line break.
    assert!(find_on_one_line(out, 0, &pieces("{\"c\":…x")).is_none());
    assert!(find_on_one_line(out, 0, &pieces("next…x")).is_some());
}
