//! Values as typed on the command line and in layerup.toml: mappings, `KEY=VALUE`, commands,
//! owners (pure).

use crate::build::entry::{placeholder_in, RawMapping, WHITEOUT};
use crate::error::{Error, Result};

/// `SRC[:DEST]`: the last `:` separates them, so a source whose name holds `:` needs a DEST.
pub fn parse_mapping(text: &str) -> Result<RawMapping> {
    let (src, dest) = match text.rsplit_once(':') {
        Some((src, dest)) => (src, Some(dest)),
        None => (text, None),
    };
    if src.is_empty() {
        return Err(Error::usage(format!(
            "mapping `{text}` has no source (write SRC[:DEST])"
        )));
    }
    if dest == Some("") {
        return Err(Error::usage(format!(
            "mapping `{text}` has an empty DEST (write SRC or SRC:DEST)"
        )));
    }
    if let Some(p) = dest.and_then(placeholder_in) {
        return Err(Error::usage(format!(
            "mapping `{text}`: `{p}` goes in SRC (the files that differ per platform), not DEST"
        )));
    }
    if let Some(part) = dest.and_then(|d| d.split('/').find(|p| p.starts_with(WHITEOUT))) {
        return Err(Error::usage(format!(
            "mapping `{text}`: DEST part `{part}` is named like a whiteout (`{WHITEOUT}…`), which \
             in a layer deletes paths of the base image"
        )));
    }
    Ok(RawMapping {
        src: src.into(),
        dest: dest.map(str::to_string),
    })
}

pub fn key_value(text: &str, flag: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.chars().any(char::is_whitespace) => {
            Ok((k.into(), v.into()))
        }
        _ => Err(Error::usage(format!("{flag} `{text}` must be KEY=VALUE"))),
    }
}

/// A JSON array (`["python","-m","app"]`) or a shell-like string (`python -m app`).
pub fn command(text: &str, flag: &str) -> Result<Vec<String>> {
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(text)
            .map_err(|_| Error::usage(format!("{flag} `{text}` is not a JSON array of strings")));
    }
    shlex::split(text).ok_or_else(|| Error::usage(format!("{flag} `{text}` has unbalanced quotes")))
}

pub fn parse_owner(text: &str) -> Result<(u32, u32)> {
    let bad = || {
        Error::usage(format!(
            "--chown `{text}` must be a numeric UID[:GID] (names cannot be resolved: layerup never reads the base's /etc/passwd)"
        ))
    };
    let (u, g) = text.split_once(':').unwrap_or((text, text));
    Ok((u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("./src:/app", "./src", Some("/app"))]
    #[case("./src", "./src", None)]
    #[case("a:b:/app", "a:b", Some("/app"))]
    #[case("conf.yaml:etc/", "conf.yaml", Some("etc/"))]
    fn mappings_split_at_the_last_colon(
        #[case] text: &str,
        #[case] src: &str,
        #[case] dest: Option<&str>,
    ) {
        assert_eq!(
            parse_mapping(text).unwrap(),
            RawMapping {
                src: src.into(),
                dest: dest.map(Into::into)
            }
        );
    }

    #[rstest]
    #[case(":/app", "has no source")]
    #[case("./src:", "has an empty DEST")]
    #[case("./x:/app/.wh.server.sh", "named like a whiteout")]
    #[case("./x:/app/.wh..wh..opq/", "named like a whiteout")]
    fn broken_mappings_are_usage_errors(#[case] text: &str, #[case] why: &str) {
        assert!(parse_mapping(text).unwrap_err().to_string().contains(why));
    }

    #[rstest]
    #[case(r#"["python", "-m", "app"]"#, &["python", "-m", "app"])]
    #[case("python -m 'my app'", &["python", "-m", "my app"])]
    #[case("[]", &[])]
    fn commands_are_json_or_shell_words(#[case] text: &str, #[case] want: &[&str]) {
        assert_eq!(command(text, "--cmd").unwrap(), want);
    }

    #[rstest]
    #[case("1000", (1000, 1000))]
    #[case("1000:50", (1000, 50))]
    fn owners_are_numeric(#[case] text: &str, #[case] want: (u32, u32)) {
        assert_eq!(parse_owner(text).unwrap(), want);
    }

    #[test]
    fn named_owners_explain_why_not() {
        assert!(parse_owner("app:app")
            .unwrap_err()
            .to_string()
            .contains("never reads the base's /etc/passwd"));
    }

    #[rstest]
    #[case("=x")]
    #[case("novalue")]
    #[case("A B=1")]
    fn env_needs_key_and_value(#[case] text: &str) {
        assert_eq!(
            key_value(text, "--env").unwrap_err().to_string(),
            format!("--env `{text}` must be KEY=VALUE")
        );
    }
}
