//! Path globs for `matchPatterns` (`/usr/bin/apt*`), matched in user space and
//! described structurally so the agent can pre-filter them in the kernel.
//!
//! Semantics (AppArmor's, which is what KubeArmor's pattern rules compile to):
//!
//! | syntax | matches |
//! |---|---|
//! | `*` | any run of characters, possibly empty, **not** containing `/` |
//! | `**` | any run of characters, possibly empty, including `/` (`***`… is the same) |
//! | `?` | exactly one character other than `/` |
//! | `[abc]`, `[a-z]` | one character of the set (never `/`) |
//! | `[!abc]`, `[^abc]` | one character not in the set (never `/`) |
//! | `\c` | the character `c` literally (`\*`, `\[`, `\\`, ...) |
//!
//! In a class, `]` right after `[` (or `[!`) and `-` first or last are literal.
//! Brace alternatives (`{a,b}`) are refused rather than taken literally: a pattern
//! that silently never matches is worse than an error. Matching is over Unicode
//! characters and always takes O(pattern × path) time (no backtracking blow-up).
//!
//! For the kernel, [`Glob::literal_prefix`] is the text every match starts with
//! (a cheap first filter), and [`Glob::tokens`] the whole pattern.

use std::fmt;

/// One element of a parsed pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GlobToken {
    /// Characters that must appear as written (escapes already resolved).
    Literal(String),
    /// `?`
    AnyCharExceptSlash,
    /// `*`
    AnyRunWithinComponent,
    /// `**`
    AnyRunAcrossComponents,
    /// `[...]`: one character (never `/`) that is (or, if `negated`, is not) in one
    /// of the inclusive ranges. A single character `c` is the range `(c, c)`.
    CharClass {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Why a pattern could not be parsed; carries the offending pattern.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("pattern {pattern:?} has a \"[\" without its \"]\"")]
    UnclosedCharClass { pattern: String },
    /// A range whose start is after its end, such as `[z-a]`.
    #[error("pattern {pattern:?} has the range {start}-{end}, whose start is after its end")]
    ReversedRange {
        pattern: String,
        start: char,
        end: char,
    },
    #[error("pattern {pattern:?} ends with an unfinished \"\\\" escape")]
    TrailingBackslash { pattern: String },
    #[error(
        "pattern {pattern:?} uses {{...}} alternatives, which are not supported: \
         write one pattern per alternative (or escape the brace as \\{{)"
    )]
    BraceAlternatives { pattern: String },
}

/// A parsed pattern. Equality and hashing follow the pattern text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Glob {
    pattern: String,
    tokens: Vec<GlobToken>,
    literal_prefix: String,
}

impl Glob {
    /// Parses `pattern` (see the module documentation for the syntax).
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let tokens = tokenize(pattern)?;
        let literal_prefix = match tokens.first() {
            Some(GlobToken::Literal(text)) => text.clone(),
            _ => String::new(),
        };
        Ok(Glob {
            pattern: pattern.to_string(),
            tokens,
            literal_prefix,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn tokens(&self) -> &[GlobToken] {
        &self.tokens
    }

    /// The text every matching path starts with: everything before the first
    /// wildcard, escapes resolved (`/usr/bin/apt` for `/usr/bin/apt*`).
    pub fn literal_prefix(&self) -> &str {
        &self.literal_prefix
    }

    /// The directory part of [`Self::literal_prefix`], up to and including its last
    /// `/`: a kernel pre-filter can key on it (`/usr/bin/` for `/usr/bin/apt*`).
    pub fn literal_directory(&self) -> &str {
        match self.literal_prefix.rfind('/') {
            Some(slash) => &self.literal_prefix[..=slash],
            None => "",
        }
    }

    /// True when the pattern has no wildcard at all (it matches one path).
    pub fn is_literal(&self) -> bool {
        self.tokens
            .iter()
            .all(|t| matches!(t, GlobToken::Literal(_)))
    }

    /// True when some match may contain more `/` than the pattern has (a `**`).
    pub fn crosses_directories(&self) -> bool {
        self.tokens
            .iter()
            .any(|t| matches!(t, GlobToken::AnyRunAcrossComponents))
    }

    /// The form the kernel matches: the literal directory the pattern is filed
    /// under, and byte tokens for the rest (`*` never crosses a `/`). Refused (with the
    /// reason) for what the kernel matcher does not do: `**`, character classes,
    /// or more than [`KERNEL_GLOB_CAP`] bytes after the literal directory. `?` matches one byte in the kernel (one character here), which only
    /// differs for non-ASCII names.
    pub fn kernel_form(&self) -> Result<KernelGlob, &'static str> {
        let directory = self.literal_directory().to_string();
        let mut rest: Vec<KernelGlobToken> = Vec::new();
        let mut skip = directory.len();
        for token in &self.tokens {
            match token {
                GlobToken::Literal(text) => {
                    let text = &text.as_bytes()[skip.min(text.len())..];
                    skip = skip.saturating_sub(token_len(token));
                    rest.extend(text.iter().map(|b| KernelGlobToken::Byte(*b)));
                }
                GlobToken::AnyCharExceptSlash => rest.push(KernelGlobToken::AnyByte),
                GlobToken::AnyRunWithinComponent => rest.push(KernelGlobToken::Star),
                GlobToken::AnyRunAcrossComponents => {
                    return Err(
                        "`**` is not enforceable in the kernel: use matchDirectories with recursive: true",
                    );
                }
                GlobToken::CharClass { .. } => {
                    return Err("character classes ([...]) are not enforceable in the kernel");
                }
            }
        }
        if rest.len() > KERNEL_GLOB_CAP {
            return Err("the part after the literal directory is longer than 64 bytes");
        }
        Ok(KernelGlob {
            directory,
            tokens: rest,
        })
    }

    /// Whether `path` matches the whole pattern.
    pub fn matches(&self, path: &str) -> bool {
        if !path.starts_with(&self.literal_prefix) {
            return false;
        }
        let text: Vec<char> = path.chars().collect();
        // reachable[j]: the tokens so far can match exactly text[..j].
        let mut reachable = vec![false; text.len() + 1];
        reachable[0] = true;
        let mut next = vec![false; text.len() + 1];
        for token in &self.tokens {
            next.iter_mut().for_each(|r| *r = false);
            match token {
                GlobToken::Literal(literal) => {
                    let literal: Vec<char> = literal.chars().collect();
                    for start in 0..=text.len() {
                        let end = start + literal.len();
                        if reachable[start] && end <= text.len() && text[start..end] == literal[..]
                        {
                            next[end] = true;
                        }
                    }
                }
                GlobToken::AnyCharExceptSlash | GlobToken::CharClass { .. } => {
                    for start in 0..text.len() {
                        if reachable[start] && single_char_matches(token, text[start]) {
                            next[start + 1] = true;
                        }
                    }
                }
                GlobToken::AnyRunWithinComponent => {
                    for end in 0..=text.len() {
                        next[end] =
                            reachable[end] || (end > 0 && next[end - 1] && text[end - 1] != '/');
                    }
                }
                GlobToken::AnyRunAcrossComponents => {
                    for end in 0..=text.len() {
                        next[end] = reachable[end] || (end > 0 && next[end - 1]);
                    }
                }
            }
            std::mem::swap(&mut reachable, &mut next);
            if !reachable.iter().any(|&r| r) {
                return false;
            }
        }
        reachable[text.len()]
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

fn single_char_matches(token: &GlobToken, c: char) -> bool {
    if c == '/' {
        return false;
    }
    match token {
        GlobToken::AnyCharExceptSlash => true,
        GlobToken::CharClass { negated, ranges } => {
            let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
            inside != *negated
        }
        _ => false,
    }
}

fn tokenize(pattern: &str) -> Result<Vec<GlobToken>, GlobError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let flush = |literal: &mut String, tokens: &mut Vec<GlobToken>| {
        if !literal.is_empty() {
            tokens.push(GlobToken::Literal(std::mem::take(literal)));
        }
    };
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                let Some(&escaped) = chars.get(i + 1) else {
                    return Err(GlobError::TrailingBackslash {
                        pattern: pattern.to_string(),
                    });
                };
                literal.push(escaped);
                i += 2;
            }
            '*' => {
                flush(&mut literal, &mut tokens);
                let mut run = 0;
                while chars.get(i + run) == Some(&'*') {
                    run += 1;
                }
                tokens.push(if run >= 2 {
                    GlobToken::AnyRunAcrossComponents
                } else {
                    GlobToken::AnyRunWithinComponent
                });
                i += run;
            }
            '?' => {
                flush(&mut literal, &mut tokens);
                tokens.push(GlobToken::AnyCharExceptSlash);
                i += 1;
            }
            '[' => {
                flush(&mut literal, &mut tokens);
                let (class, next) = parse_char_class(pattern, &chars, i)?;
                tokens.push(class);
                i = next;
            }
            '{' | '}' => {
                return Err(GlobError::BraceAlternatives {
                    pattern: pattern.to_string(),
                });
            }
            c => {
                literal.push(c);
                i += 1;
            }
        }
    }
    flush(&mut literal, &mut tokens);
    Ok(tokens)
}

/// Parses the class starting at `chars[open]` (a `[`); returns it and the index after its `]`.
fn parse_char_class(
    pattern: &str,
    chars: &[char],
    open: usize,
) -> Result<(GlobToken, usize), GlobError> {
    let unclosed = || GlobError::UnclosedCharClass {
        pattern: pattern.to_string(),
    };
    let mut i = open + 1;
    let negated = matches!(chars.get(i), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let first_member = i;
    let mut members: Vec<char> = Vec::new();
    // Which members were escaped or otherwise literal, so `\-` is not a range dash.
    let mut literal_dash: Vec<bool> = Vec::new();
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(unclosed());
        };
        match c {
            ']' if i > first_member => break,
            '\\' => {
                let Some(&escaped) = chars.get(i + 1) else {
                    return Err(unclosed());
                };
                members.push(escaped);
                literal_dash.push(true);
                i += 2;
            }
            _ => {
                members.push(c);
                literal_dash.push(false);
                i += 1;
            }
        }
    }
    // Never empty: the loop above only stops at a `]` after at least one member.
    let mut ranges = Vec::new();
    let mut m = 0;
    while m < members.len() {
        let is_range = m + 2 < members.len() && members[m + 1] == '-' && !literal_dash[m + 1];
        if is_range {
            let (start, end) = (members[m], members[m + 2]);
            if start > end {
                return Err(GlobError::ReversedRange {
                    pattern: pattern.to_string(),
                    start,
                    end,
                });
            }
            ranges.push((start, end));
            m += 3;
        } else {
            ranges.push((members[m], members[m]));
            m += 1;
        }
    }
    Ok((GlobToken::CharClass { negated, ranges }, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(pattern: &str) -> Glob {
        Glob::new(pattern).expect("valid pattern")
    }

    #[test]
    fn star_stays_within_one_component() {
        let g = glob("/usr/bin/apt*");
        assert!(g.matches("/usr/bin/apt"));
        assert!(g.matches("/usr/bin/apt-get"));
        assert!(g.matches("/usr/bin/aptitude"));
        assert!(!g.matches("/usr/bin/ap"));
        assert!(!g.matches("/usr/bin/apt/x"));
        assert!(!g.matches("/usr/sbin/apt"));
    }

    #[test]
    fn star_in_the_middle() {
        let g = glob("/home/*/.ssh/id_*");
        assert!(g.matches("/home/alice/.ssh/id_rsa"));
        assert!(!g.matches("/home/alice/x/.ssh/id_rsa"));
        assert!(!g.matches("/home/alice/.ssh/known_hosts"));
        let g = glob("/tmp/*.sh");
        assert!(g.matches("/tmp/.sh"));
        assert!(g.matches("/tmp/a.b.sh"));
        assert!(!g.matches("/tmp/a/b.sh"));
    }

    #[test]
    fn double_star_crosses_components() {
        let g = glob("/opt/**");
        assert!(g.matches("/opt/"));
        assert!(g.matches("/opt/a"));
        assert!(g.matches("/opt/a/b/c"));
        assert!(!g.matches("/opt"));
        assert!(g.crosses_directories());
        let g = glob("/var/**/log/*.log");
        assert!(g.matches("/var/a/log/x.log"));
        assert!(g.matches("/var/a/b/log/x.log"));
        assert!(g.matches("/var//log/x.log"));
        assert!(!g.matches("/var/log/x.log"));
        assert!(!g.matches("/var/a/log/sub/x.log"));
        assert_eq!(glob("/a/***").tokens(), glob("/a/**").tokens());
    }

    #[test]
    fn question_mark_is_one_non_slash_character() {
        let g = glob("/bin/?sh");
        assert!(g.matches("/bin/bsh"));
        assert!(g.matches("/bin/zsh"));
        assert!(!g.matches("/bin/sh"));
        assert!(!g.matches("/bin/bash"));
        assert!(!glob("/a?b").matches("/a/b"));
        assert!(glob("/é?").matches("/éü"));
    }

    #[test]
    fn character_classes() {
        let g = glob("/usr/bin/python3.[0-9]");
        assert!(g.matches("/usr/bin/python3.7"));
        assert!(!g.matches("/usr/bin/python3.x"));
        assert!(!g.matches("/usr/bin/python3.10"));
        let g = glob("/dev/tty[!0-9]");
        assert!(g.matches("/dev/ttyS"));
        assert!(!g.matches("/dev/tty1"));
        let g = glob("/dev/tty[^0-9]");
        assert!(g.matches("/dev/ttyS"));
        let g = glob("/x/[]a]");
        assert!(g.matches("/x/]"));
        assert!(g.matches("/x/a"));
        let g = glob("/x/[a-]");
        assert!(g.matches("/x/-"));
        assert!(!g.matches("/x/b"));
        let g = glob("/x/[a\\-z]");
        assert!(g.matches("/x/-"));
        assert!(!g.matches("/x/m"));
        assert!(!glob("/x[!a]y").matches("/x/y"), "classes never match /");
    }

    #[test]
    fn escapes_are_literal() {
        let g = glob("/weird/\\*name\\?");
        assert!(g.is_literal());
        assert!(g.matches("/weird/*name?"));
        assert!(!g.matches("/weird/xname?"));
        assert_eq!(g.literal_prefix(), "/weird/*name?");
    }

    #[test]
    fn literal_prefix_and_directory() {
        let g = glob("/usr/bin/apt*");
        assert_eq!(g.literal_prefix(), "/usr/bin/apt");
        assert_eq!(g.literal_directory(), "/usr/bin/");
        let g = glob("*/x");
        assert_eq!(g.literal_prefix(), "");
        assert_eq!(g.literal_directory(), "");
        assert!(!g.is_literal());
    }

    #[test]
    fn literal_patterns_match_exactly() {
        let g = glob("/etc/shadow");
        assert!(g.is_literal());
        assert!(g.matches("/etc/shadow"));
        assert!(!g.matches("/etc/shadow-"));
        assert!(!g.matches("/etc/shado"));
    }

    #[test]
    fn many_stars_do_not_blow_up() {
        let g = glob(&format!("/{}b", "*a".repeat(30)));
        let path = format!("/{}", "a".repeat(4000));
        assert!(!g.matches(&path));
        let g = glob(&format!("/{}", "**a".repeat(30)));
        assert!(g.matches(&format!("/{}", "a".repeat(40))));
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(
            Glob::new("/usr/bin/[ab"),
            Err(GlobError::UnclosedCharClass { .. })
        ));
        assert!(matches!(
            Glob::new("/usr/bin/[]"),
            Err(GlobError::UnclosedCharClass { .. })
        ));
        assert!(matches!(
            Glob::new("/usr/bin/[z-a]"),
            Err(GlobError::ReversedRange {
                start: 'z',
                end: 'a',
                ..
            })
        ));
        assert!(matches!(
            Glob::new("/usr/bin/x\\"),
            Err(GlobError::TrailingBackslash { .. })
        ));
        assert!(matches!(
            Glob::new("/usr/bin/{apt,dpkg}"),
            Err(GlobError::BraceAlternatives { .. })
        ));
        assert!(Glob::new("/usr/bin/\\{x\\}").is_ok());
    }
}

/// Longest pattern remainder (in tokens) the kernel matches: the probes' `GLOB_CAP`.
pub const KERNEL_GLOB_CAP: usize = edgearmor_probe_abi::GLOB_CAP;
// The refusal in `Glob::kernel_form` states the cap in words.
const _: () = assert!(KERNEL_GLOB_CAP == 64);

/// One token of [`KernelGlob::tokens`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelGlobToken {
    Byte(u8),
    /// `?`
    AnyByte,
    /// `*`
    Star,
}

/// A pattern as the kernel matches it (see [`Glob::kernel_form`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelGlob {
    /// The literal directory, ending with `/`.
    pub directory: String,
    /// What follows the directory.
    pub tokens: Vec<KernelGlobToken>,
}

fn token_len(token: &GlobToken) -> usize {
    match token {
        GlobToken::Literal(text) => text.len(),
        _ => 1,
    }
}

#[cfg(test)]
mod kernel_form_tests {
    use super::*;

    #[test]
    fn last_component_patterns_have_a_kernel_form() {
        let g = Glob::new("/usr/bin/apt*").expect("valid");
        let k = g.kernel_form().expect("enforceable");
        assert_eq!(k.directory, "/usr/bin/");
        assert_eq!(
            k.tokens,
            vec![
                KernelGlobToken::Byte(b'a'),
                KernelGlobToken::Byte(b'p'),
                KernelGlobToken::Byte(b't'),
                KernelGlobToken::Star
            ]
        );
        let k = Glob::new("/etc/*.con?")
            .expect("valid")
            .kernel_form()
            .expect("ok");
        assert_eq!(k.directory, "/etc/");
        assert_eq!(k.tokens.len(), 6);
    }

    #[test]
    fn other_patterns_are_refused_with_a_reason() {
        let k = Glob::new("/home/*/.ssh/id_*")
            .expect("valid")
            .kernel_form()
            .expect("ok");
        assert_eq!(k.directory, "/home/");
        for p in ["/etc/**", "/usr/bin/[ab]pt"] {
            assert!(Glob::new(p).expect("valid").kernel_form().is_err(), "{p}");
        }
        let long = format!("/x/{}*", "a".repeat(64));
        assert!(Glob::new(&long).expect("valid").kernel_form().is_err());
    }
}
