//! `unload [--config FILE] [--token FILE]` and `unlock-token create ...`: the command
//! lines of removing enforcement, which locked mode guards.

use std::path::{Path, PathBuf};

use edgearmor_bundle::limits::MAX_UNLOCK_VALIDITY_SECS;
use lexopt::prelude::*;

use super::{Command, ConfigOrigin, Invocation, string, text};
use crate::config::{AgentConfig, DEFAULT_CONFIG_PATH};
use crate::control::setid_rules::SetidRuleSet;

/// `unload [--config FILE] [--token FILE]`: nothing else, so no flag can change the
/// node name, keys or state a token is checked against.
pub(super) fn parse_unload(parser: &mut lexopt::Parser) -> Result<Invocation, String> {
    let mut config_path: Option<PathBuf> = None;
    let mut token = None;
    while let Some(arg) = parser.next().map_err(text)? {
        match arg {
            Long("config") => config_path = Some(parser.value().map_err(text)?.into()),
            Long("token") => token = Some(PathBuf::from(parser.value().map_err(text)?)),
            Long(other) => {
                return Err(format!("unknown option --{other}"));
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    let config = match &config_path {
        Some(path) => AgentConfig::load(path, true),
        None => AgentConfig::load(Path::new(DEFAULT_CONFIG_PATH), false),
    }
    .map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    Ok(Invocation {
        command: Command::Unload { token },
        config,
        rules: SetidRuleSet::default(),
        origin: ConfigOrigin {
            file: config_path.unwrap_or_else(|| DEFAULT_CONFIG_PATH.into()),
            overrides: Vec::new(),
        },
    })
}

/// `unlock-token create --key KEY --node NODE --expires-in DURATION --out FILE`.
pub(super) fn parse_unlock_token(parser: &mut lexopt::Parser) -> Result<Command, String> {
    match parser.next().map_err(text)? {
        Some(Value(v)) if v == "create" => {}
        _ => return Err("expected `unlock-token create ...`".into()),
    }
    let (mut key, mut node, mut expires_in, mut out) = (None, None, None, None);
    while let Some(arg) = parser.next().map_err(text)? {
        let name = match arg {
            Long(name) => name.to_owned(),
            other => return Err(format!("unlock-token create: {}", other.unexpected())),
        };
        let value = string(parser.value().map_err(text)?).map_err(|e| format!("--{name}: {e}"))?;
        match name.as_str() {
            "key" => key = Some(PathBuf::from(value)),
            "node" => node = Some(value),
            "expires-in" => expires_in = Some(parse_duration(&value)?),
            "out" => out = Some(PathBuf::from(value)),
            other => return Err(format!("unlock-token create: unknown option --{other}")),
        }
    }
    Ok(Command::UnlockTokenCreate {
        key: key.ok_or("unlock-token create: give --key SECRET_KEY_FILE")?,
        node: node.ok_or("unlock-token create: give --node NODE (the agent's node name)")?,
        valid_for_secs: expires_in
            .ok_or("unlock-token create: give --expires-in DURATION (e.g. 30m, at most 24h)")?,
        out: out.ok_or("unlock-token create: give --out FILE")?,
    })
}

/// `--expires-in`: a whole number of seconds with `s`, `m` or `h` (or none: seconds),
/// more than 0 and at most [`MAX_UNLOCK_VALIDITY_SECS`].
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => {
            return Err(format!(
                "--expires-in {text:?}: expected a number of seconds, or of minutes or hours with m or h (30m, 2h)"
            ));
        }
    };
    let secs = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("--expires-in {text:?}: {digits:?} is not a number"))?;
    if secs == 0 || secs > MAX_UNLOCK_VALIDITY_SECS {
        return Err(format!(
            "--expires-in {text}: {secs} s; a token is valid for 1 s to {MAX_UNLOCK_VALIDITY_SECS} s (24h, MAX_UNLOCK_VALIDITY_SECS)"
        ));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    #[test]
    fn durations_name_the_limit() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("24h"), Ok(86_400));
        for bad in ["25h", "86401", "0", "0m"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("MAX_UNLOCK_VALIDITY_SECS"), "{bad}: {err}");
        }
        for bad in ["", "h", "1d", "1.5h", "-1h", "1hm", "99999999999999999999h"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.starts_with("--expires-in"), "{bad}: {err}");
        }
    }

    #[test]
    fn unlock_token_create_needs_every_option() {
        let args = [
            "unlock-token",
            "create",
            "--key",
            "fleet.key",
            "--node",
            "gw-7",
            "--expires-in",
            "30m",
            "--out",
            "t.tok",
        ];
        let command = parse(args).map(|i| i.command).expect("parses");
        assert_eq!(
            command,
            Command::UnlockTokenCreate {
                key: "fleet.key".into(),
                node: "gw-7".into(),
                valid_for_secs: 1800,
                out: "t.tok".into(),
            }
        );
        for (drop, needle) in [
            (2, "--key"),
            (4, "--node"),
            (6, "--expires-in"),
            (8, "--out"),
        ] {
            let mut partial = args.to_vec();
            partial.drain(drop..drop + 2);
            let err = parse(partial).err().expect("refused").to_string();
            assert!(err.contains(needle), "{err}");
        }
        let err = parse(["unlock-token", "verify"])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("unlock-token create"), "{err}");
    }

    #[test]
    fn unload_takes_only_its_config_and_token() {
        let i = parse(["unload", "--token", "t.tok"]).expect("parses");
        assert_eq!(
            i.command,
            Command::Unload {
                token: Some("t.tok".into())
            }
        );
        assert_eq!(i.origin.file, Path::new(DEFAULT_CONFIG_PATH));
        // A flag that would change the node name the token is checked against.
        let err = parse(["unload", "--host-name", "other", "--token", "t.tok"])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("unknown option --host-name"), "{err}");
        let err = parse(["unload", "--config", "/nonexistent/agent.toml"])
            .err()
            .expect("a named config must exist")
            .to_string();
        assert!(err.contains("/nonexistent/agent.toml"), "{err}");
    }
}
