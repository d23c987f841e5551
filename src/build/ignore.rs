//! `.layerupignore`: the `.dockerignore` rules exactly (moby `patternmatcher`), on globset.
//!
//! Not gitignore, whose rules differ in ways users notice: a pattern is anchored at the source
//! root (`*.pyc` matches only top-level files; write `**/*.pyc`), a pattern matches a path or any
//! of its parents, and the last matching line wins — so `!dir/keep` re-includes a file inside an
//! excluded `dir`, which gitignore cannot. `ignore::gitignore` implements gitignore precedence, so
//! the matching is built on its glob engine, globset, with `*` and `?` stopping at `/` as in Go's
//! `filepath.Match`.

use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

use crate::error::{Error, Result};

pub const FILE_NAME: &str = ".layerupignore";

#[derive(Debug, Default)]
pub struct IgnoreRules {
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    glob: GlobMatcher,
    exception: bool,
}

impl IgnoreRules {
    /// The rules in `dir/.layerupignore`; none when the file does not exist.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                Self::parse(&text).map_err(|e| e.context(format!("in `{}`", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::io("read", &path, &e)),
        }
    }

    /// These rules, then `extra` patterns (`--ignore`, `ignore` in layerup.toml) after them, so
    /// that they win where both match.
    pub fn with(mut self, extra: &[String]) -> Result<Self> {
        if !extra.is_empty() {
            let more = Self::parse(&extra.join("\n")).map_err(|e| e.context("in --ignore"))?;
            self.rules.extend(more.rules);
        }
        Ok(self)
    }

    pub fn parse(text: &str) -> Result<Self> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let bad = |why: String| Error::input(format!("line {}: `{line}` {why}", n + 1));
            if pattern.is_empty() {
                return Err(bad("is an exception with no pattern".into()));
            }
            let cleaned = clean(pattern);
            if cleaned.is_empty() {
                continue; // `/` or `.`: the root itself is never excluded
            }
            let glob = GlobBuilder::new(&go_classes(&cleaned).map_err(|w| bad(w.into()))?)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| bad(format!("is not a valid pattern: {}", e.kind())))?
                .compile_matcher();
            rules.push(Rule { glob, exception });
        }
        Ok(IgnoreRules { rules })
    }

    /// Whether `rel` (relative to the source root, `/`-separated) is left out of the layer.
    pub fn excludes(&self, rel: &str) -> bool {
        let mut excluded = false;
        for rule in &self.rules {
            // Only a rule that could flip the answer needs evaluating (moby does the same).
            if rule.exception != excluded {
                continue;
            }
            if matches_self_or_parent(&rule.glob, rel) {
                excluded = !rule.exception;
            }
        }
        excluded
    }

    /// With no `!` rules, an excluded directory's contents can all be skipped unread.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }
}

fn matches_self_or_parent(glob: &GlobMatcher, rel: &str) -> bool {
    if glob.is_match(rel) {
        return true;
    }
    rel.match_indices('/')
        .any(|(i, _)| glob.is_match(&rel[..i]))
}

/// Go's `filepath.Clean` for a pattern, then the leading `/` dropped: `/a/./b/` → `a/b`.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    parts.push("..")
                }
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Go writes a negated class `[^…]` and treats `!` as a plain member; globset negates with
/// `[!…]`. Rewrite classes so each means what it means to docker.
fn go_classes(pattern: &str) -> std::result::Result<String, &'static str> {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push('\\');
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '[' => {
                let mut body = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    if c == ']' && !body.is_empty() && body != "^" {
                        closed = true;
                        break;
                    }
                    if c == '\\' {
                        if let Some(next) = chars.next() {
                            body.push(next);
                            continue;
                        }
                    }
                    body.push(c);
                }
                if !closed {
                    return Err("has a `[` with no closing `]`");
                }
                let (negated, members) = match body.strip_prefix('^') {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, body),
                };
                // A literal `!` must not come first, where globset would read negation.
                let members = match members.strip_prefix('!') {
                    Some(rest) if !rest.is_empty() => format!("{rest}!"),
                    _ => members,
                };
                out.push('[');
                if negated {
                    out.push('!');
                }
                out.push_str(&members);
                out.push(']');
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn rules(text: &str) -> IgnoreRules {
        IgnoreRules::parse(text).unwrap()
    }

    // Each case is a rule of the .dockerignore reference (docs.docker.com, "dockerignore file").
    #[rstest]
    #[case("*/temp*", "somedir/temporary.txt", true)]
    #[case("*/temp*", "somedir/temp", true)]
    #[case("*/temp*", "temp", false)]
    #[case("*/*/temp*", "somedir/subdir/temporary.txt", true)]
    #[case("temp?", "tempa", true)]
    #[case("temp?", "dir/tempa", false)]
    #[case("*.pyc", "a.pyc", true)]
    #[case("*.pyc", "pkg/a.pyc", false)]
    #[case("**/*.pyc", "pkg/sub/a.pyc", true)]
    #[case("**/*.pyc", "a.pyc", true)]
    #[case("node_modules", "node_modules/x/index.js", true)]
    #[case("/build/", "build/out.o", true)]
    #[case("./docs//api", "docs/api/index.html", true)]
    #[case("docs/**", "docs/a/b.md", true)]
    #[case("[^a]x", "bx", true)]
    #[case("[^a]x", "ax", false)]
    #[case("[!a]x", "!x", true)]
    #[case("[!a]x", "bx", false)]
    fn patterns_match_as_docker_matches_them(
        #[case] pattern: &str,
        #[case] path: &str,
        #[case] excluded: bool,
    ) {
        assert_eq!(
            rules(pattern).excludes(path),
            excluded,
            "{pattern} vs {path}"
        );
    }

    #[test]
    fn the_last_matching_line_wins() {
        let r = rules("*.md\n!README*.md\nREADME-secret.md");
        assert!(r.excludes("notes.md"));
        assert!(!r.excludes("README.md"));
        assert!(r.excludes("README-secret.md"));
        let r = rules("*.md\nREADME-secret.md\n!README*.md");
        assert!(!r.excludes("README-secret.md"));
    }

    #[test]
    fn an_exception_reaches_inside_an_excluded_directory() {
        let r = rules("vendor\n!vendor/keep.txt");
        assert!(r.excludes("vendor/drop.txt"));
        assert!(!r.excludes("vendor/keep.txt"));
        assert!(r.has_exceptions());
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let r = rules("# *.txt\n\n   \n");
        assert!(!r.excludes("a.txt"));
        assert!(!r.excludes("# *.txt"));
    }

    #[rstest]
    #[case("!", "is an exception with no pattern")]
    #[case("a[bc", "has a `[` with no closing `]`")]
    fn bad_lines_are_named(#[case] text: &str, #[case] why: &str) {
        let err = IgnoreRules::parse(text).unwrap_err().to_string();
        assert_eq!(err, format!("line 1: `{text}` {why}"));
    }
}
