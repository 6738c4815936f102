//! Hostile policy files, generated into a directory (never checked in), each with
//! the limit that must refuse it. Shared by the policy crate's tests and the agent's
//! `edgearmor policy check` test (`#[path]`-included there).

use std::io::Write;
use std::path::{Path, PathBuf};

/// One hostile file and how it must be refused.
pub struct Hostile {
    pub path: PathBuf,
    /// The limit's name, which the diagnostic must contain.
    pub limit: &'static str,
    /// The lines the diagnostic may point at (inclusive); `0..=0` for the whole file.
    pub lines: std::ops::RangeInclusive<usize>,
}

const HEADER: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorHostPolicy
metadata:
  name: hostile
";

const GOOD_POLICY: &str = "apiVersion: security.kubearmor.com/v1
kind: KubeArmorHostPolicy
metadata:
  name: good-block-ls
spec:
  nodeSelector:
    matchLabels:
      kubearmor.io/hostname: \"*\"
  process:
    matchPaths:
      - path: /usr/bin/ls
  action: Block
";

/// A valid policy, to sit next to the hostile ones.
pub fn write_good_policy(dir: &Path) -> PathBuf {
    let path = dir.join("good.yaml");
    std::fs::write(&path, GOOD_POLICY).expect("write good policy");
    path
}

/// The alias bomb: nine levels of anchors, each a list of ten aliases of the one
/// before (10^9 nodes expanded), in about 1 KB. Returns the file and the lines of
/// the anchors (where the node budget must run out).
pub fn write_alias_bomb(dir: &Path) -> (PathBuf, std::ops::RangeInclusive<usize>) {
    let mut text = String::from(HEADER);
    text.push_str("  labels:\n");
    let first_line = text.lines().count() + 1;
    text.push_str(&format!("    l0: &l0 [{}]\n", ["x"; 10].join(",")));
    for level in 1..9 {
        let aliases = vec![format!("*l{}", level - 1); 10].join(",");
        text.push_str(&format!("    l{level}: &l{level} [{aliases}]\n"));
    }
    let last_line = text.lines().count();
    text.push_str(
        "spec:\n  nodeSelector:\n    matchLabels:\n      kubearmor.io/hostname: \"*\"\n  \
         process:\n    matchPaths:\n      - path: /usr/bin/ls\n  action: Block\n",
    );
    assert!(text.len() <= 1100, "the bomb is about 1 KB: {}", text.len());
    let path = dir.join("alias-bomb.yaml");
    std::fs::write(&path, text).expect("write bomb");
    (path, first_line..=last_line)
}

/// Every hostile variant, written into `dir`.
pub fn write_all(dir: &Path) -> Vec<Hostile> {
    let mut all = Vec::new();
    let (bomb, lines) = write_alias_bomb(dir);
    all.push(Hostile {
        path: bomb,
        limit: "MAX_YAML_NODES",
        lines,
    });

    // Block nesting 200 deep: refused where level 65 opens.
    let deep: String = (0..200).map(|d| format!("{}a:\n", " ".repeat(d))).collect();
    all.push(write(
        dir,
        "deep-nesting.yaml",
        &deep,
        "MAX_NESTING_DEPTH",
        65..=65,
    ));

    // An alias of a 40-deep anchor, used 40 deep: each alone is fine, together 80.
    let deep_alias = format!(
        "a: &a {}{}\nb: {}*a{}\n",
        "[".repeat(40),
        "]".repeat(40),
        "[".repeat(40),
        "]".repeat(40)
    );
    all.push(write(
        dir,
        "deep-alias.yaml",
        &deep_alias,
        "MAX_NESTING_DEPTH",
        2..=2,
    ));

    // 100 MB, sparse: refused by its size on disk, unread.
    let huge = dir.join("huge.yaml");
    let file = std::fs::File::create(&huge).expect("create huge");
    file.set_len(100 * 1024 * 1024).expect("sparse 100 MB");
    all.push(Hostile {
        path: huge,
        limit: "MAX_POLICY_FILE_BYTES",
        lines: 0..=0,
    });

    // 10^6 distinct keys (about 8 MB): refused by size.
    let path = dir.join("million-keys.yaml");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    for i in 0..1_000_000 {
        writeln!(out, "k{i}:").expect("write key");
    }
    out.flush().expect("flush");
    all.push(Hostile {
        path,
        limit: "MAX_POLICY_FILE_BYTES",
        lines: 0..=0,
    });

    // 10^6 keys in 3 MB (the same key; duplicates are kept for the schema to
    // report): refused at key 1025.
    let dup = "a:\n".repeat(1_000_000);
    all.push(write(
        dir,
        "million-duplicate-keys.yaml",
        &dup,
        "MAX_MAPPING_KEYS",
        1025..=1025,
    ));

    // 10^6 keys in one 2 MB flow mapping: the parser would queue every token.
    let flow = format!("{{{}}}\n", vec!["a"; 1_000_000].join(","));
    all.push(write(
        dir,
        "million-flow-keys.yaml",
        &flow,
        "MAX_YAML_LOOKAHEAD_BYTES",
        1..=1,
    ));

    // 100 aliases of a 60 KB scalar: 6 MB of text from 60 KB.
    let text_bomb = format!(
        "a: &a {}\nb:\n{}",
        "x".repeat(60_000),
        "  - *a\n".repeat(100)
    );
    all.push(write(
        dir,
        "text-bomb.yaml",
        &text_bomb,
        "MAX_YAML_SCALAR_BYTES",
        3..=102,
    ));
    all
}

fn write(
    dir: &Path,
    name: &str,
    text: &str,
    limit: &'static str,
    lines: std::ops::RangeInclusive<usize>,
) -> Hostile {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write hostile file");
    Hostile { path, limit, lines }
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgearmor-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
