//! Every parse budget of `edgearmor_policy::limits`, hit by a hostile file generated
//! here: each file is refused quickly, with one diagnostic naming the limit and the
//! line where the budget ran out, and a good file next to it still loads.

mod hostile;

use std::path::Path;
use std::time::{Duration, Instant};

use edgearmor_policy::limits::{
    MAX_DIAGNOSTICS_PER_FILE, MAX_MAPPING_KEYS, MAX_NESTING_DEPTH, MAX_POLICY_FILE_BYTES,
    MAX_YAML_LOOKAHEAD_BYTES, MAX_YAML_NODES, MAX_YAML_SCALAR_BYTES,
};
use edgearmor_policy::{
    PolicyError, check_policy_paths, load_policy_directory, parse_policy_text, read_policy_file,
};

/// Generous for a debug build on a busy machine; the release figures are in the README.
const QUICKLY: Duration = Duration::from_secs(1);

#[test]
fn each_hostile_file_is_refused_quickly_naming_its_limit_and_line() {
    let dir = hostile::scratch("each");
    for case in hostile::write_all(&dir) {
        let started = Instant::now();
        let diagnostics = read_policy_file(&case.path).expect_err("hostile file refused");
        let elapsed = started.elapsed();
        let name = case.path.display();
        assert_eq!(diagnostics.len(), 1, "{name}: {diagnostics:?}");
        let d = &diagnostics[0];
        assert!(
            d.to_string().contains(case.limit),
            "{name}: names {}: {d}",
            case.limit
        );
        assert!(
            case.lines.contains(&d.line),
            "{name}: line {} in {:?}: {d}",
            d.line,
            case.lines
        );
        assert!(elapsed < QUICKLY, "{name}: took {elapsed:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_alias_bomb_is_refused_by_the_node_budget_at_its_anchors() {
    let dir = hostile::scratch("bomb");
    let (bomb, anchor_lines) = hostile::write_alias_bomb(&dir);
    let diagnostics = read_policy_file(&bomb).expect_err("bomb refused");
    assert_eq!(
        diagnostics[0].error,
        PolicyError::TooManyNodes {
            limit: MAX_YAML_NODES
        }
    );
    assert!(anchor_lines.contains(&diagnostics[0].line));
    // The same aliases, fewer levels: well within the budget, and expanded.
    let text = std::fs::read_to_string(&bomb).expect("read bomb");
    let small: String = text
        .lines()
        .filter(|l| {
            !["l3:", "l4:", "l5:", "l6:", "l7:", "l8:"]
                .iter()
                .any(|k| l.contains(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let policies = parse_policy_text(Path::new("small-bomb.yaml"), &small)
        .map_err(|d| d.iter().map(|d| d.to_string()).collect::<Vec<_>>());
    // Labels must be strings, so the expanded lists are reported, not accepted:
    // the point is that they were built (no budget error).
    let problems = policies.expect_err("lists as labels are refused");
    assert!(
        problems.iter().all(|p| p.contains("expected a string")),
        "{problems:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nesting_is_bounded_for_written_and_aliased_depth() {
    let exactly = format!(
        "{}{}",
        "[".repeat(MAX_NESTING_DEPTH),
        "]".repeat(MAX_NESTING_DEPTH)
    );
    let diagnostics = parse_policy_text(Path::new("d.yaml"), &exactly).expect_err("a list");
    assert!(
        !matches!(diagnostics[0].error, PolicyError::NestingTooDeep { .. }),
        "{MAX_NESTING_DEPTH} levels are allowed: {diagnostics:?}"
    );
    // An anchor 32 deep used 33 deep: 65 levels once expanded.
    let half = MAX_NESTING_DEPTH / 2;
    let text = format!(
        "a: &a {}{}\nb: {}*a{}\n",
        "[".repeat(half),
        "]".repeat(half),
        "[".repeat(half),
        "]".repeat(half)
    );
    let diagnostics = parse_policy_text(Path::new("d.yaml"), &text).expect_err("too deep");
    assert_eq!(
        (diagnostics[0].line, &diagnostics[0].error),
        (
            2,
            &PolicyError::NestingTooDeep {
                limit: MAX_NESTING_DEPTH
            }
        )
    );
}

#[test]
fn a_100_mb_file_is_refused_by_its_size_unread() {
    let dir = hostile::scratch("huge");
    let path = dir.join("huge.yaml");
    let file = std::fs::File::create(&path).expect("create");
    file.set_len(100 * 1024 * 1024).expect("sparse");
    let started = Instant::now();
    let diagnostics = read_policy_file(&path).expect_err("too large");
    assert!(started.elapsed() < QUICKLY);
    assert_eq!(
        diagnostics[0].error,
        PolicyError::FileTooLarge {
            bytes: Some(100 * 1024 * 1024),
            limit: MAX_POLICY_FILE_BYTES
        }
    );
    assert_eq!(diagnostics[0].line, 0, "about the whole file");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_endless_file_is_read_only_to_the_limit() {
    // Not a regular file, so its size says nothing: reading stops one byte past.
    let dir = hostile::scratch("endless");
    let path = dir.join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &path).expect("symlink");
    let diagnostics = read_policy_file(&path).expect_err("too large");
    assert_eq!(
        diagnostics[0].error,
        PolicyError::FileTooLarge {
            bytes: None,
            limit: MAX_POLICY_FILE_BYTES
        }
    );
    assert!(
        diagnostics[0]
            .to_string()
            .contains("larger than 4194304 bytes")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn text_handed_in_directly_has_the_same_size_limit() {
    // Bundles hand their files' text to parse_policy_text without a file.
    let text = "#".repeat(usize::try_from(MAX_POLICY_FILE_BYTES).expect("fits") + 1);
    let diagnostics = parse_policy_text(Path::new("b.yaml"), &text).expect_err("too large");
    assert!(matches!(
        diagnostics[0].error,
        PolicyError::FileTooLarge { .. }
    ));
}

#[test]
fn a_million_keys_are_refused_at_the_first_key_past_the_limit() {
    let text = "a:\n".repeat(1_000_000);
    let diagnostics = parse_policy_text(Path::new("k.yaml"), &text).expect_err("too many keys");
    assert_eq!(
        (
            diagnostics.len(),
            diagnostics[0].line,
            &diagnostics[0].error
        ),
        (
            1,
            MAX_MAPPING_KEYS + 1,
            &PolicyError::TooManyKeys {
                limit: MAX_MAPPING_KEYS
            }
        )
    );
    // At the limit, the keys are all there (and reported as the duplicates they are).
    let text = "a:\n".repeat(MAX_MAPPING_KEYS);
    let diagnostics = parse_policy_text(Path::new("k.yaml"), &text).expect_err("unknown key");
    assert!(
        !diagnostics
            .iter()
            .any(|d| matches!(d.error, PolicyError::TooManyKeys { .. })),
        "{:?}",
        diagnostics.first()
    );
}

#[test]
fn long_flow_collections_that_could_be_keys_hit_the_lookahead_limit() {
    let items = 40_000;
    let list = format!("[{}]", vec!["x"; items].join(","));
    assert!(list.len() > MAX_YAML_LOOKAHEAD_BYTES);
    // A document that is one flow collection (JSON), a list item, a value on its own
    // line: each might be a mapping key until it ends, so the parser reads it whole.
    for text in [
        format!("{list}\n"),
        format!("- {list}\n"),
        format!("tags:\n  {list}\n"),
    ] {
        let diagnostics = parse_policy_text(Path::new("f.yaml"), &text).expect_err("refused");
        assert_eq!(
            (diagnostics[0].line, &diagnostics[0].error),
            (
                1,
                &PolicyError::LookaheadTooLong {
                    limit: MAX_YAML_LOOKAHEAD_BYTES
                }
            ),
            "{}",
            &text[..10]
        );
    }
    // After a key on the same line it cannot be a key: built as it is read.
    for text in [
        format!("tags: {list}\n"),
        format!("tags:\n{}", "  - x\n".repeat(items)),
    ] {
        let diagnostics = parse_policy_text(Path::new("f.yaml"), &text).expect_err("no policy");
        assert!(
            matches!(diagnostics[0].error, PolicyError::UnknownKey { .. }),
            "{diagnostics:?}"
        );
    }
    // Just under the limit is fine.
    let short = format!("[{}]\n", vec!["x"; 30_000].join(","));
    assert!(short.len() < MAX_YAML_LOOKAHEAD_BYTES);
    let diagnostics = parse_policy_text(Path::new("f.yaml"), &short).expect_err("no policy");
    assert!(matches!(
        diagnostics[0].error,
        PolicyError::WrongType { .. }
    ));
}

#[test]
fn aliased_text_counts_against_the_scalar_budget() {
    let scalar = 60_000;
    let copies = MAX_YAML_SCALAR_BYTES / scalar + 1;
    let text = format!(
        "a: &a {}\nb:\n{}",
        "x".repeat(scalar),
        "  - *a\n".repeat(copies)
    );
    let diagnostics = parse_policy_text(Path::new("t.yaml"), &text).expect_err("refused");
    assert_eq!(
        diagnostics[0].error,
        PolicyError::TooMuchText {
            limit: MAX_YAML_SCALAR_BYTES
        }
    );
    // The alias that ran out of budget: the anchor and its kept copy cost two scalars,
    // so the budget runs out before the last alias.
    assert!(diagnostics[0].line > 2 && diagnostics[0].line <= 2 + copies);
}

#[test]
fn problems_past_the_per_file_limit_are_counted_not_listed() {
    let rules = 500;
    let text = format!(
        "apiVersion: security.kubearmor.com/v1
kind: KubeArmorHostPolicy
metadata:
  name: many
spec:
  nodeSelector:
    matchLabels:
      kubearmor.io/hostname: \"*\"
  process:
    matchPaths:
{}  action: Block
",
        (0..rules)
            .map(|i| format!("      - path: relative/{i}\n"))
            .collect::<String>()
    );
    let diagnostics = parse_policy_text(Path::new("m.yaml"), &text).expect_err("refused");
    assert_eq!(diagnostics.len(), MAX_DIAGNOSTICS_PER_FILE + 1);
    assert!(
        diagnostics[..MAX_DIAGNOSTICS_PER_FILE]
            .iter()
            .all(|d| matches!(d.error, PolicyError::NotAbsolute { .. })),
        "the first problems, in line order"
    );
    assert_eq!(diagnostics[0].line, 11);
    assert_eq!(
        diagnostics[MAX_DIAGNOSTICS_PER_FILE].error,
        PolicyError::MoreProblems {
            more: rules - MAX_DIAGNOSTICS_PER_FILE,
            limit: MAX_DIAGNOSTICS_PER_FILE
        }
    );
}

#[test]
fn a_directory_with_the_bomb_still_loads_its_good_policy() {
    let dir = hostile::scratch("dir");
    let (bomb, _) = hostile::write_alias_bomb(&dir);
    let good = hostile::write_good_policy(&dir);
    let load = load_policy_directory(&dir, "gw-1").expect("directory listed");
    let names: Vec<&str> = load.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["good-block-ls"]);
    assert_eq!(load.rejected.len(), 1);
    assert_eq!(load.rejected[0].file, bomb);
    assert!(matches!(
        load.rejected[0].diagnostics[0].error,
        PolicyError::TooManyNodes { .. }
    ));
    // `policy check` on the directory: the bomb's one problem, nothing about good.yaml.
    let diagnostics = check_policy_paths(std::slice::from_ref(&dir));
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].file, bomb);
    assert!(!diagnostics.iter().any(|d| d.file == good));
    let _ = std::fs::remove_dir_all(&dir);
}
