//! The repository stands alone: it names no document outside itself, every decision record and invariant it
//! cites exists, ARCHITECTURE.md's code map matches `src/` (each module it names exists, every source file is
//! covered, and each module imports only what its entry allows), and `src/main.rs` stays a dispatcher.
//! No database, no network: it reads files.
#![expect(
    clippy::expect_used,
    reason = "test code: a panic is a test failure with its message"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The repository's text files: those git tracks when git can say, else every file outside `target/`, `.git/` and
/// `scratch/`.
fn text_files() -> Vec<(String, String)> {
    let tracked = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split('\0')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        });
    let paths = tracked.unwrap_or_else(|| {
        let mut all = Vec::new();
        walk(root(), &mut all);
        all
    });
    paths
        .into_iter()
        .filter(|p| !p.starts_with("target/") && !p.starts_with(".git/"))
        // A file git tracks may be deleted in the working tree; binary files are not text.
        .filter_map(|p| Some((std::fs::read_to_string(root().join(&p)).ok()?, p)))
        .map(|(text, p)| (p, text))
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = relative(&path);
        // What .gitignore keeps out of the repository: build output and the local scratch folder.
        if matches!(rel.as_str(), "target" | ".git" | "scratch") {
            continue;
        }
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(rel);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Names of documents that live outside the repository; built from pieces so this file does not name them.
fn outside_names() -> Vec<String> {
    vec![
        ["..", "/shared"].concat(),
        ["shared/", "DECISIONS"].concat(),
        ["DECISIONS", ".md"].concat(),
        ["DESIGN", ".md"].concat(),
        ["STYLE", ".md"].concat(),
    ]
}

#[test]
fn no_file_names_a_document_outside_the_repository() {
    let files = text_files();
    assert!(files.len() > 50, "found only {} text files", files.len());
    let names = outside_names();
    let mut found = Vec::new();
    for (path, text) in &files {
        for (n, line) in text.lines().enumerate() {
            for name in &names {
                if line.contains(name.as_str()) {
                    found.push(format!("{path}:{}: names `{name}`", n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "references to documents outside the repository:\n{}",
        found.join("\n")
    );
}

/// Every `docs/decisions/….md` named in `text`, with the line it is on.
fn cited_records(text: &str) -> Vec<(usize, String)> {
    const PREFIX: &str = "docs/decisions/";
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find(PREFIX) {
            let after = rest.get(at + PREFIX.len()..).unwrap_or("");
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect();
            let name = name.trim_end_matches('.');
            if Path::new(name).extension().is_some_and(|e| e == "md") {
                out.push((n + 1, format!("{PREFIX}{name}")));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn every_cited_decision_record_exists_and_is_indexed() {
    let mut missing = Vec::new();
    let mut cited = 0;
    for (path, text) in text_files() {
        for (line, record) in cited_records(&text) {
            cited += 1;
            if !root().join(&record).is_file() {
                missing.push(format!("{path}:{line}: {record} does not exist"));
            }
        }
    }
    assert!(cited > 40, "only {cited} citations of decision records found");
    assert!(missing.is_empty(), "{}", missing.join("\n"));

    // Each record is numbered once and listed in the index.
    let index = read("docs/decisions/README.md");
    let mut numbers = BTreeSet::new();
    let dir = std::fs::read_dir(root().join("docs/decisions")).expect("docs/decisions/");
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "README.md" {
            continue;
        }
        let number = name.get(..4).unwrap_or("");
        assert!(
            number.chars().all(|c| c.is_ascii_digit())
                && name.get(4..5) == Some("-")
                && Path::new(&name).extension().is_some_and(|e| e == "md"),
            "docs/decisions/{name} is not named NNNN-title.md"
        );
        assert!(
            numbers.insert(number.to_owned()),
            "two records are numbered {number}"
        );
        assert!(
            index.contains(&format!("({name})")),
            "docs/decisions/README.md does not list {name}"
        );
        let text = read(&format!("docs/decisions/{name}"));
        for part in ["## Context", "## Decision", "## Consequences"] {
            assert!(text.contains(part), "docs/decisions/{name} has no `{part}`");
        }
    }
    assert!(numbers.len() >= 30, "only {} records", numbers.len());
}

/// The numbered invariants of ARCHITECTURE.md.
fn invariants(architecture: &str) -> BTreeSet<u32> {
    section(architecture, "## Invariants")
        .lines()
        .filter_map(|l| l.split_once(". ").and_then(|(n, _)| n.parse().ok()))
        .collect()
}

/// The text of a `## ` section, up to the next one.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no `{heading}` section"));
    let body = doc.get(start + heading.len() + 2..).unwrap_or("");
    body.find("\n## ")
        .map_or(body, |end| body.get(..end).unwrap_or(body))
}

#[test]
fn every_cited_invariant_exists() {
    let known = invariants(&read("ARCHITECTURE.md"));
    assert!(
        known.len() >= 8,
        "ARCHITECTURE.md lists {} invariants",
        known.len()
    );
    let mut bad = Vec::new();
    for (path, text) in text_files() {
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("ARCHITECTURE.md invariant") {
                let after = rest.get(at + "ARCHITECTURE.md invariant".len()..).unwrap_or("");
                let numbers = after.trim_start_matches('s').trim_start();
                for number in numbers
                    .split(|c: char| !c.is_ascii_digit())
                    .take_while(|s| !s.is_empty())
                    .filter_map(|s| s.parse::<u32>().ok())
                {
                    if !known.contains(&number) {
                        bad.push(format!(
                            "{path}:{}: invariant {number} is not in ARCHITECTURE.md",
                            n + 1
                        ));
                    }
                }
                rest = after;
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// One entry of the code map: a path, and the import rules of a module under `src/`.
#[derive(Debug, Default)]
struct Entry {
    path: String,
    imports: Option<BTreeSet<String>>,
    never: BTreeSet<String>,
}

/// The entries of ARCHITECTURE.md's code map: level-3 headings naming a path in backticks, each followed by
/// prose and optionally `- Imports:` and `- Never:` lines (continued on lines indented by two spaces) listing
/// `crate::module`s and external crates in backticks.
fn code_map() -> Vec<Entry> {
    let doc = read("ARCHITECTURE.md");
    let mut entries: Vec<Entry> = Vec::new();
    let mut field: Option<&str> = None;
    for line in section(&doc, "## Code map").lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            let path = heading.trim().trim_matches('`').to_owned();
            entries.push(Entry {
                path,
                ..Entry::default()
            });
            field = None;
            continue;
        }
        let Some(entry) = entries.last_mut() else { continue };
        let text = if let Some(t) = line.strip_prefix("- Imports:") {
            field = Some("imports");
            entry.imports.get_or_insert_with(BTreeSet::new);
            t
        } else if let Some(t) = line.strip_prefix("- Never:") {
            field = Some("never");
            t
        } else if line.starts_with("  ") && field.is_some() {
            line
        } else {
            field = None;
            continue;
        };
        let names = text.split('`').skip(1).step_by(2).map(str::to_owned);
        match field {
            Some("imports") => entry.imports.get_or_insert_with(BTreeSet::new).extend(names),
            Some(_) => entry.never.extend(names),
            None => {}
        }
    }
    entries
}

/// The top-level modules of the crate that `text` names through `crate::` (`crate::db::…`, `crate::{db, scim}`).
fn crate_modules(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let before = rest.get(..at).and_then(|b| b.chars().last());
        let after = rest.get(at + "crate::".len()..).unwrap_or("");
        rest = after;
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::`, `my_crate::` …
        }
        if let Some(group) = after.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            out.extend(
                group
                    .split(',')
                    .map(|item| ident(item.trim()))
                    .filter(|m| !m.is_empty()),
            );
        } else {
            let m = ident(after);
            if !m.is_empty() {
                out.insert(m);
            }
        }
    }
    out
}

/// Whether `text` uses the external crate `name` (`name::…` not preceded by an identifier character).
fn uses_crate(text: &str, name: &str) -> bool {
    let needle = format!("{name}::");
    text.match_indices(&needle).any(|(at, _)| {
        !text
            .get(..at)
            .and_then(|b| b.chars().last())
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    })
}

fn rust_files(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read a source folder").flatten() {
        let path: PathBuf = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(relative(&path));
        }
    }
}

/// The module a code-map path is: `src/db/repo/` → `db`, `src/config.rs` → `config`.
fn own_module(path: &str) -> String {
    let rest = path.strip_prefix("src/").unwrap_or(path);
    let first = rest.split('/').next().unwrap_or(rest);
    first.trim_end_matches(".rs").to_owned()
}

#[test]
fn architecture_code_map_names_modules_that_exist() {
    let map = code_map();
    assert!(map.len() >= 15, "the code map has {} entries", map.len());
    for e in &map {
        let p = root().join(&e.path);
        let exists = if e.path.ends_with('/') {
            p.is_dir()
        } else {
            p.is_file()
        };
        assert!(
            exists,
            "ARCHITECTURE.md's code map names `{}`, which does not exist",
            e.path
        );
    }
    // Every other path ARCHITECTURE.md names in backticks exists too.
    let doc = read("ARCHITECTURE.md");
    for token in doc.split('`').skip(1).step_by(2) {
        let rooted = [
            "src/",
            "tests/",
            "benches/",
            "docs/",
            "migrations/",
            "scripts/",
            "scim-schemas/",
        ];
        if rooted.iter().any(|r| token.starts_with(r)) && !token.contains(['*', '<', ' ']) {
            assert!(
                root().join(token).exists(),
                "ARCHITECTURE.md names `{token}`, which does not exist"
            );
        }
    }
}

#[test]
fn architecture_code_map_covers_src_and_its_import_rules_hold() {
    let map = code_map();
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    assert!(files.len() > 40, "found {} source files", files.len());
    let mut broken = Vec::new();
    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
    for file in &files {
        // The most specific entry covers the file.
        let Some(entry) = map
            .iter()
            .filter(|e| {
                if e.path.ends_with('/') {
                    file.starts_with(&e.path)
                } else {
                    *file == e.path
                }
            })
            .max_by_key(|e| e.path.len())
        else {
            broken.push(format!(
                "{file} is not covered by ARCHITECTURE.md's code map: add it"
            ));
            continue;
        };
        let text = read(file);
        let own = own_module(&entry.path);
        let used = crate_modules(&text);
        for m in &used {
            let name = format!("crate::{m}");
            if entry.never.contains(&name) {
                broken.push(format!(
                    "{file} uses `{name}`, which `{}` must never import",
                    entry.path
                ));
            } else if let Some(allowed) = &entry.imports
                && *m != own
                && !allowed.contains(&name)
            {
                broken.push(format!(
                    "{file} uses `{name}`, not among the imports of `{}`",
                    entry.path
                ));
            }
        }
        for external in entry.never.iter().filter(|n| !n.starts_with("crate::")) {
            if uses_crate(&text, external) {
                broken.push(format!(
                    "{file} uses `{external}`, which `{}` must never use",
                    entry.path
                ));
            }
        }
        *checked.entry(entry.path.as_str()).or_default() += 1;
    }
    assert!(
        broken.is_empty(),
        "ARCHITECTURE.md and the code disagree:\n{}",
        broken.join("\n")
    );
    for must in [
        "src/scim/",
        "src/db/repo/",
        "src/lifecycle/",
        "src/http/",
        "src/cli/",
    ] {
        assert!(checked.contains_key(must), "no file was checked against `{must}`");
    }
}

#[test]
fn the_import_checker_sees_every_form() {
    let text = "use crate::db::repo;\nuse crate::{scim, input::check};\n/// [`crate::keys::x`]\n$crate::no";
    let got: Vec<String> = crate_modules(text).into_iter().collect();
    assert_eq!(got, ["db", "input", "keys", "scim"]);
    assert!(uses_crate("use diesel::prelude::*;", "diesel"));
    assert!(!uses_crate("offboard_diesel::x and crate::diesel::y", "diesel"));
}

#[test]
fn main_only_parses_and_dispatches() {
    let main = read("src/main.rs");
    let lines = main.lines().count();
    assert!(
        lines < 150,
        "src/main.rs has {lines} lines; command groups belong in src/cli/"
    );
    assert!(!main.contains("fn serve"), "src/main.rs runs a command itself");
}

/// Files under `src/` that mention `needle` outside comments.
fn code_mentions(needle: &str) -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    files
        .into_iter()
        .filter(|f| {
            read(f)
                .lines()
                .any(|l| !l.trim_start().starts_with("//") && l.contains(needle))
        })
        .collect()
}

/// ARCHITECTURE.md invariant 1, the part grep can see: the generation is raised by one repository function,
/// called from `lifecycle/mod.rs` only, and SETs about a user are queued from `lifecycle/mod.rs` only.
#[test]
fn access_ends_in_one_place() {
    let bump = code_mentions("bump_generation(");
    assert_eq!(
        bump,
        BTreeSet::from([
            "src/db/repo/users.rs".to_owned(),
            "src/lifecycle/mod.rs".to_owned()
        ]),
        "only lifecycle may raise a user's token generation"
    );
    let mut enqueue = code_mentions("fanout::enqueue(");
    enqueue.extend(code_mentions("pub fn enqueue("));
    assert_eq!(
        enqueue,
        BTreeSet::from(["src/fanout/mod.rs".to_owned(), "src/lifecycle/mod.rs".to_owned()]),
        "only lifecycle may queue the SETs that report a change of access"
    );
}
