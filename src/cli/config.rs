//! `layerup.toml` (committed) and `layerup.local.toml` (one developer's, uncommitted): project
//! defaults for every flag, registry aliases and profiles, merged with where each value came from.
//!
//! Precedence, lowest first: the user's own `~/.config/layerup/config.toml`, `layerup.toml`, its
//! `[profile.NAME]`, `layerup.local.toml`, its `[profile.NAME]`, the environment (`EXPECTED_REF`,
//! Skaffold's variables), the command line. Config values reach the command as the flags they
//! stand for, so they are validated exactly as typed flags are.
//!
//! A committed `layerup.toml` comes with a repository, not from the user: it may name files only
//! inside the directory it governs (SRCs, `oci:` layouts), and it may not widen what layerup may
//! touch (`allow-contexts`, `insecure`): those come from the user's own files, the environment or
//! the command line.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use crate::build::entry::RawMapping;
use crate::error::{Error, Result};
use crate::oci::reference::ImageRef;

pub const FILE: &str = "layerup.toml";
pub const LOCAL_FILE: &str = "layerup.local.toml";

/// Keys that widen what layerup may touch — a cluster the guard would refuse, plain HTTP to a
/// registry off loopback: read only from the user's own settings, never from a committed file.
const USER_ONLY: &[&str] = &["allow-contexts", "insecure"];

/// The user's own settings file: `$XDG_CONFIG_HOME/layerup/config.toml`, else
/// `~/.config/layerup/config.toml`.
pub fn user_file() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let dir = var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config")))?;
    Some(dir.join("layerup/config.toml"))
}

/// What a key's value must look like.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Str,
    Int,
    Bool,
    /// Strings, one flag each.
    List,
    /// `{ K = "V" }`, one `--flag K=V` each.
    Table,
    /// A string, or an array of strings given as a JSON array (`entrypoint`, `cmd`).
    Command,
    /// `"KIND/NAME"`, or `true` for "find the workload" (`deploy`).
    Workload,
    /// `SRC[:DEST]` strings, SRC relative to the file's directory (`mappings`).
    Mappings,
}

/// Every key a file may set, and the flag it stands for.
const KEYS: &[(&str, &str, Shape)] = &[
    ("base", "base", Shape::Str),
    ("to", "to", Shape::Str),
    ("mappings", "", Shape::Mappings),
    ("build", "build", Shape::Str),
    ("build-deps", "build-dep", Shape::List),
    ("platform", "platform", Shape::Str),
    ("env", "env", Shape::Table),
    ("labels", "label", Shape::Table),
    ("annotations", "annotation", Shape::Table),
    ("tags", "tag", Shape::List),
    ("entrypoint", "entrypoint", Shape::Command),
    ("cmd", "cmd", Shape::Command),
    ("workdir", "workdir", Shape::Str),
    ("user", "user", Shape::Str),
    ("chown", "chown", Shape::Str),
    ("ignore", "ignore", Shape::List),
    ("compression", "compression", Shape::Str),
    ("format", "format", Shape::Str),
    ("max-deltas", "max-deltas", Shape::Int),
    ("squash-at", "squash-at", Shape::Str),
    ("debounce", "debounce", Shape::Int),
    ("verify-every", "verify-every", Shape::Str),
    ("sync", "sync", Shape::Bool),
    ("journal", "journal", Shape::Bool),
    ("then", "then", Shape::Str),
    ("settle", "settle", Shape::Str),
    ("restart-on", "restart-on", Shape::List),
    ("deploy", "deploy", Shape::Workload),
    ("container", "container", Shape::Str),
    ("namespace", "namespace", Shape::Str),
    ("context", "context", Shape::Str),
    ("cluster-registry", "cluster-registry", Shape::Str),
    ("allow-contexts", "allow-context", Shape::List),
    ("timeout", "timeout", Shape::Str),
    ("insecure", "insecure", Shape::Bool),
    ("jobs", "jobs", Shape::Int),
    ("tries", "tries", Shape::Int),
    ("stall-timeout", "stall-timeout", Shape::Str),
    ("chunk-size", "chunk-size", Shape::Str),
];

/// A value as read, in the form it is turned into flags.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<String>),
    Table(BTreeMap<String, String>),
}

/// A value and where it came from (`layerup.toml:3`).
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub value: Value,
    pub from: String,
}

/// The merged configuration.
#[derive(Debug, Default)]
pub struct Config {
    /// The directory holding the files (relative SRCs are resolved against it).
    pub root: Option<PathBuf>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    pub profile: Option<String>,
    /// How the profile was chosen: `--profile` or `LAYERUP_PROFILE`.
    pub profile_from: &'static str,
    pub values: BTreeMap<String, Setting>,
    /// Registry aliases: the first path segment of a reference → what it stands for.
    pub registries: BTreeMap<String, Setting>,
    /// `[images.NAME]`: each image's own settings, over `values` (which are every image's
    /// defaults). Empty for a one-image project.
    pub images: BTreeMap<String, BTreeMap<String, Setting>>,
}

/// Who wrote a file, and so what it may say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// Came with the repository (`layerup.toml`): files only inside its own directory, and
    /// nothing that widens what layerup may touch.
    Repository,
    /// The user's own (`layerup.local.toml`, never committed; their config directory's).
    User,
}

impl Config {
    /// Finds `layerup.toml` / `layerup.local.toml` in `dir` or its nearest ancestor holding
    /// either, and merges them with `profile` applied. No file: an empty configuration.
    pub fn load(dir: &Path, profile: Option<&str>) -> Result<Config> {
        let root = dir
            .ancestors()
            .find(|d| d.join(FILE).is_file() || d.join(LOCAL_FILE).is_file());
        Self::load_from(root, profile, true)
    }

    /// The files of the directory `root` (none: an empty configuration). `profile` must be
    /// defined there when `strict`; a service's file below the project root need not define
    /// the project's profiles.
    pub fn load_from(root: Option<&Path>, profile: Option<&str>, strict: bool) -> Result<Config> {
        let mut config = Config {
            root: root.map(Path::to_path_buf),
            profile: profile.map(str::to_string),
            profile_from: "--profile",
            ..Config::default()
        };
        let mut profiles_seen = Vec::new();
        let mut files: Vec<(PathBuf, String, Trust)> = Vec::new();
        if let Some(user) = user_file() {
            files.push((user.clone(), user.display().to_string(), Trust::User));
        }
        if let Some(root) = root {
            files.push((root.join(FILE), FILE.into(), Trust::Repository));
            files.push((root.join(LOCAL_FILE), LOCAL_FILE.into(), Trust::User));
        }
        for (path, name, trust) in files {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                // Another user's home (`sudo -u`, a service account with HOME unchanged): not
                // this user's settings.
                Err(e) if trust == Trust::User && name != LOCAL_FILE => {
                    tracing::debug!("not reading {}: {e}", path.display());
                    continue;
                }
                Err(e) => return Err(Error::io("read", &path, &e)),
            };
            let project = trust == Trust::Repository || name == LOCAL_FILE;
            let file = File {
                path: &path,
                name: &name,
                text: &text,
                trust,
                project,
            };
            let found = config.merge_file(&file, profile)?;
            config.files.push(path.clone());
            profiles_seen.extend(found);
        }
        if let Some(p) = profile.filter(|_| strict) {
            if !profiles_seen.iter().any(|s| s == p) {
                profiles_seen.sort();
                profiles_seen.dedup();
                let defined = if profiles_seen.is_empty() {
                    "none is".to_string()
                } else {
                    let verb = if profiles_seen.len() == 1 {
                        "is"
                    } else {
                        "are"
                    };
                    format!("{} {verb}", profiles_seen.join(", "))
                };
                return Err(Error::usage(format!(
                    "profile `{p}` is not defined in {FILE} or {LOCAL_FILE} ({defined}): add a [profile.{p}] section"
                )));
            }
        }
        Ok(config)
    }

    /// Merges one file: its top level, then its `[profile.NAME]`. Returns the profiles it
    /// defines.
    fn merge_file(&mut self, file: &File, profile: Option<&str>) -> Result<Vec<String>> {
        let table = DeTable::parse(file.text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(file.text, s.start));
            Error::usage(format!(
                "{}:{line}: {}",
                file.path.display(),
                crate::error::one_line(e.message())
            ))
        })?;
        let mut profiles = Vec::new();
        let mut chosen = None;
        for (key, value) in table.get_ref() {
            if key.get_ref() != "profile" {
                continue;
            }
            let DeValue::Table(all) = value.get_ref() else {
                return Err(file.bad(value.span(), "`profile` holds sections: [profile.NAME]"));
            };
            for (pname, ptable) in all {
                let DeValue::Table(t) = ptable.get_ref() else {
                    return Err(file.bad(ptable.span(), "a profile is a section: [profile.NAME]"));
                };
                profiles.push(pname.get_ref().to_string());
                if Some(pname.get_ref().as_ref()) == profile {
                    chosen = Some(t);
                }
            }
        }
        self.merge_table(file, table.get_ref(), None)?;
        if let (Some(t), Some(p)) = (chosen, profile) {
            self.merge_table(file, t, Some(p))?;
        }
        Ok(profiles)
    }

    fn merge_table(&mut self, file: &File, table: &DeTable, profile: Option<&str>) -> Result<()> {
        let from = |span: std::ops::Range<usize>| {
            let at = format!("{}:{}", file.name, line_of(file.text, span.start));
            match profile {
                Some(p) => format!("{at} [profile.{p}]"),
                None => at,
            }
        };
        for (key, value) in table {
            let k: &str = key.get_ref();
            if !file.project && matches!(k, "profile" | "images") {
                return Err(file.bad(
                    key.span(),
                    &format!("[{k}.NAME] belongs in a project's {FILE}"),
                ));
            }
            if k == "profile" && profile.is_none() {
                continue;
            }
            if k == "images" && profile.is_none() {
                let DeValue::Table(images) = value.get_ref() else {
                    return Err(file.bad(value.span(), "`images` holds sections: [images.NAME]"));
                };
                for (name, table) in images {
                    let DeValue::Table(t) = table.get_ref() else {
                        return Err(file.bad(table.span(), "an image is a section: [images.NAME]"));
                    };
                    let name = name.get_ref().to_string();
                    if !is_image_name(&name) {
                        return Err(file.bad(
                            table.span(),
                            &format!("image name `{name}`: letters, digits, `-`, `_` and `.` only"),
                        ));
                    }
                    let mut own = self.images.remove(&name).unwrap_or_default();
                    for (key, value) in t {
                        if !KEYS.iter().any(|(n, _, _)| n == key.get_ref()) {
                            return Err(file.bad(
                                key.span(),
                                &format!(
                                    "unknown key `{}` in [images.{name}] (an image takes the \
                                     keys of the top level)",
                                    key.get_ref()
                                ),
                            ));
                        }
                        let at = format!(
                            "{}:{} [images.{name}]",
                            file.name,
                            line_of(file.text, key.span().start)
                        );
                        merge_value(&mut own, file, key, value, at)?;
                    }
                    self.images.insert(name, own);
                }
                continue;
            }
            if k == "registries" {
                let DeValue::Table(aliases) = value.get_ref() else {
                    return Err(file.bad(
                        value.span(),
                        "`registries` is a section of ALIAS = \"host/path\"",
                    ));
                };
                for (alias, target) in aliases {
                    let DeValue::String(t) = target.get_ref() else {
                        return Err(file.bad(
                            target.span(),
                            "a registry alias is a string, like \"registry.example.com/team\"",
                        ));
                    };
                    self.registries.insert(
                        alias.get_ref().to_string(),
                        Setting {
                            value: Value::Str(t.to_string()),
                            from: from(alias.span()),
                        },
                    );
                }
                continue;
            }
            merge_value(&mut self.values, file, key, value, from(key.span()))?;
        }
        Ok(())
    }

    /// The settings of `image` (`[images.NAME]` over the top level), or of the top level.
    pub fn values_for(&self, image: Option<&str>) -> BTreeMap<String, Setting> {
        let mut values = self.values.clone();
        let own = image.and_then(|i| self.images.get(i));
        for (k, s) in own.into_iter().flatten() {
            let merged = match (&s.value, values.get(k)) {
                // Tables add to the defaults (`env`, `labels`), as a lower file's would.
                (
                    Value::Table(new),
                    Some(Setting {
                        value: Value::Table(old),
                        ..
                    }),
                ) => {
                    let mut all = old.clone();
                    all.extend(new.clone());
                    Setting {
                        value: Value::Table(all),
                        from: s.from.clone(),
                    }
                }
                _ => s.clone(),
            };
            values.insert(k.clone(), merged);
        }
        values
    }

    /// The directory a file's `build` runs in (its own); `None` when the build is not a file's.
    pub fn build_dir(&self, image: Option<&str>) -> Option<PathBuf> {
        let values = self.values_for(image);
        let from = &values.get("build")?.from;
        [FILE, LOCAL_FILE]
            .iter()
            .any(|f| from.starts_with(&format!("{f}:")))
            .then(|| self.root.clone())
            .flatten()
    }

    /// The directory a committed file's mappings must stay in, when the mappings of `image` (or
    /// the top level) come from the committed layerup.toml; `None` when they are the user's.
    pub fn confined_mappings(&self, image: Option<&str>) -> Option<PathBuf> {
        let values = self.values_for(image);
        let from = &values.get("mappings")?.from;
        from.starts_with(&format!("{FILE}:"))
            .then(|| self.root.clone())
            .flatten()
    }

    /// The flags (`--name=value`) and the SRC arguments the configuration adds to a command line
    /// of `cmd` — for `image`, or the top level — for every setting `cmd` takes and `given`
    /// says the user did not set already.
    pub fn args_for(
        &self,
        image: Option<&str>,
        cmd: &clap::Command,
        given: &dyn Fn(&clap::Arg) -> bool,
    ) -> (Vec<OsString>, Vec<OsString>) {
        let mut out: Vec<String> = Vec::new();
        let mut sources: Vec<String> = Vec::new();
        for (key, setting) in &self.values_for(image) {
            let Some(&(_, flag, shape)) = KEYS.iter().find(|(name, _, _)| name == key) else {
                continue;
            };
            let arg = if shape == Shape::Mappings {
                cmd.get_arguments().find(|a| a.get_id() == "mappings")
            } else {
                cmd.get_arguments().find(|a| a.get_long() == Some(flag))
            };
            if arg.is_none_or(given) {
                continue;
            }
            let f = |v: &str| format!("--{flag}={v}");
            match (&setting.value, shape) {
                (Value::List(items), Shape::Mappings) => sources.extend(items.iter().cloned()),
                (Value::Bool(true), Shape::Workload) => out.push(format!("--{flag}=")),
                (Value::Bool(b), _) => out.extend(b.then(|| format!("--{flag}"))),
                (Value::Str(s), _) => out.push(f(s)),
                (Value::Int(n), _) => out.push(f(&n.to_string())),
                (Value::List(items), Shape::Command) => {
                    out.push(f(&serde_json::to_string(items).unwrap_or_default()))
                }
                (Value::List(items), _) => out.extend(items.iter().map(|i| f(i))),
                (Value::Table(t), _) => out.extend(t.iter().map(|(k, v)| f(&format!("{k}={v}")))),
            }
        }
        let os = |v: Vec<String>| v.into_iter().map(OsString::from).collect();
        (os(out), os(sources))
    }

    /// A reference with its first path segment replaced by the alias it names, if it names one
    /// (`prod/app:1` → `registry.example.com/prod/app:1`). A segment that is a registry host
    /// (`localhost`, or holding `.` or `:`) is never an alias, as in docker's rules.
    pub fn expand(&self, reference: &str) -> String {
        if reference.starts_with("oci:") {
            return reference.to_string();
        }
        let bare = reference.strip_prefix("docker://").unwrap_or(reference);
        let Some((first, rest)) = bare.split_once('/') else {
            return reference.to_string();
        };
        if first.contains(['.', ':']) || first == "localhost" {
            return reference.to_string();
        }
        match self.registries.get(first) {
            Some(Setting {
                value: Value::Str(target),
                ..
            }) => format!("{}/{rest}", target.trim_end_matches('/')),
            _ => reference.to_string(),
        }
    }

    /// What `layerup config` prints: every value (of `image`, or the top level), in TOML, with
    /// where it came from.
    pub fn show(&self, image: Option<&str>) -> String {
        let values = self.values_for(image);
        let mut lines = Vec::new();
        match &self.profile {
            Some(p) => lines.push(format!("# profile: {p} ({})", self.profile_from)),
            None => lines.push("# profile: none (--profile NAME or LAYERUP_PROFILE)".to_string()),
        }
        if self.files.is_empty() {
            lines.push(format!(
                "# no {FILE} or {LOCAL_FILE} here or in a parent directory"
            ));
        }
        for f in &self.files {
            lines.push(format!("# read: {}", f.display()));
        }
        let mut rows: Vec<(String, &str)> = values
            .iter()
            .map(|(k, s)| (format!("{k} = {}", toml_text(&s.value)), s.from.as_str()))
            .collect();
        rows.extend(self.registries.iter().map(|(k, s)| {
            (
                format!("registries.{k} = {}", toml_text(&s.value)),
                s.from.as_str(),
            )
        }));
        let width = rows
            .iter()
            .map(|(r, _)| r.chars().count())
            .max()
            .unwrap_or(0);
        for (row, from) in rows {
            let pad = width - row.chars().count();
            lines.push(format!("{row}{}  # {from}", " ".repeat(pad)));
        }
        lines.join("\n")
    }
}

impl Config {
    /// `layerup config --json`.
    pub fn to_json(&self, image: Option<&str>) -> serde_json::Value {
        let settings =
            |m: &BTreeMap<String, Setting>| -> serde_json::Map<String, serde_json::Value> {
                m.iter()
                    .map(|(k, s)| {
                        let value = match &s.value {
                            Value::Str(v) => serde_json::json!(v),
                            Value::Int(n) => serde_json::json!(n),
                            Value::Bool(b) => serde_json::json!(b),
                            Value::List(l) => serde_json::json!(l),
                            Value::Table(t) => serde_json::json!(t),
                        };
                        (
                            k.clone(),
                            serde_json::json!({"value": value, "from": s.from}),
                        )
                    })
                    .collect()
            };
        serde_json::json!({
            "profile": self.profile,
            "files": self.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "settings": settings(&self.values_for(image)),
            "images": self.images.keys().collect::<Vec<_>>(),
            "registries": settings(&self.registries),
        })
    }
}

/// Reads one `key = value` of a file into `values`, checked against the key's shape.
fn merge_value(
    values: &mut BTreeMap<String, Setting>,
    file: &File,
    key: &toml::Spanned<std::borrow::Cow<'_, str>>,
    value: &toml::Spanned<DeValue<'_>>,
    from: String,
) -> Result<()> {
    let k: &str = key.get_ref();
    let Some(&(_, _, shape)) = KEYS.iter().find(|(name, _, _)| *name == k) else {
        let known: Vec<&str> = KEYS.iter().map(|k| k.0).collect();
        return Err(file.bad(
            key.span(),
            &format!(
                "unknown key `{k}` (known: {}, [registries], [images.NAME], [profile.NAME])",
                known.join(", ")
            ),
        ));
    };
    if file.trust == Trust::Repository && USER_ONLY.contains(&k) {
        return Err(file.bad(
            key.span(),
            &format!(
                "`{k}` widens what layerup may touch, and a committed {FILE} may not say so for \
                 the user: set it in {LOCAL_FILE} (never committed), in {}, in the environment \
                 or on the command line",
                user_file().map_or("~/.config/layerup/config.toml".into(), |f| f
                    .display()
                    .to_string())
            ),
        ));
    }
    if !file.project && !USER_ONLY.contains(&k) {
        return Err(file.bad(
            key.span(),
            &format!(
                "`{k}` belongs in a project's {FILE} or {LOCAL_FILE}; this file holds your own \
                 settings ({}) and [registries]",
                USER_ONLY.join(", ")
            ),
        ));
    }
    let span = value.span();
    let value = read(value.get_ref(), shape, file)
        .map_err(|why| file.bad(span.clone(), &format!("`{k}` {why}")))?;
    let value = match value {
        Value::Str(text) if matches!(k, "to" | "base") => Value::Str(
            file.layout_ref(&text, k)
                .map_err(|why| file.bad(span, &format!("`{k}` {why}")))?,
        ),
        v => v,
    };
    let value = match (value, values.get(k)) {
        // Tables add to what a lower file or section set.
        (
            Value::Table(new),
            Some(Setting {
                value: Value::Table(old),
                ..
            }),
        ) => {
            let mut all = old.clone();
            all.extend(new);
            Value::Table(all)
        }
        (v, _) => v,
    };
    values.insert(k.to_string(), Setting { value, from });
    Ok(())
}

/// `[images.NAME]`: a name that reads well on a line of output and in a command.
fn is_image_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with(['.', '-'])
}

/// One file being read: for messages, and for what it may say.
struct File<'a> {
    path: &'a Path,
    name: &'a str,
    text: &'a str,
    trust: Trust,
    /// A project's file (`layerup.toml`, `layerup.local.toml`), which may describe images; the
    /// user's own config file holds only their settings and registry aliases.
    project: bool,
}

impl File<'_> {
    fn bad(&self, span: std::ops::Range<usize>, what: &str) -> Error {
        Error::usage(format!(
            "{}:{}: {what}",
            self.path.display(),
            line_of(self.text, span.start)
        ))
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// A path a committed file names (`path`, already joined to the file's directory) must stay
    /// inside that directory: lexically (no `..` out, no absolute path elsewhere), and with its
    /// symlinks resolved where it exists. The user's own files may name anything.
    fn keep_inside(&self, path: &Path, what: &str) -> std::result::Result<(), String> {
        if self.trust == Trust::User {
            return Ok(());
        }
        match crate::build::entry::inside(self.dir(), path) {
            Ok(()) => Ok(()),
            Err(why) => Err(format!(
                "{what} `{}` is outside the directory this file governs ({why}): a committed \
                 {FILE} names files only inside its own tree; give it on the command line if \
                 you mean it",
                path.display()
            )),
        }
    }

    /// An `oci:DIR…` reference (`to`, `base`) with DIR relative to the file, kept inside its
    /// tree when committed; any other reference as it is.
    fn layout_ref(&self, text: &str, key: &str) -> std::result::Result<String, String> {
        if !text.starts_with("oci:") {
            return Ok(text.to_string());
        }
        let ImageRef::Layout(mut l) = ImageRef::parse(text, key).map_err(|e| e.to_string())? else {
            return Ok(text.to_string());
        };
        l.dir = self.dir().join(l.dir.strip_prefix(".").unwrap_or(&l.dir));
        self.keep_inside(&l.dir, "the layout")?;
        Ok(ImageRef::Layout(l).to_string())
    }
}

/// A TOML value in the shape `shape` wants; the reason in words when it is not.
fn read(v: &DeValue, shape: Shape, file: &File) -> std::result::Result<Value, String> {
    let string = |v: &DeValue| match v {
        DeValue::String(s) => Some(s.to_string()),
        _ => None,
    };
    let strings = |v: &DeValue| match v {
        DeValue::Array(a) => a
            .iter()
            .map(|i| string(i.get_ref()))
            .collect::<Option<Vec<_>>>(),
        _ => None,
    };
    match shape {
        Shape::Str => string(v).map(Value::Str).ok_or("must be a string".into()),
        Shape::Int => match v {
            DeValue::Integer(i) if i.radix() == 10 => i
                .as_str()
                .replace('_', "")
                .parse()
                .map(Value::Int)
                .map_err(|_| "must be a whole number".into()),
            _ => Err("must be a whole number".into()),
        },
        Shape::Bool => match v {
            DeValue::Boolean(b) => Ok(Value::Bool(*b)),
            _ => Err("must be true or false".into()),
        },
        Shape::List => strings(v)
            .map(Value::List)
            .ok_or("must be an array of strings".into()),
        Shape::Command => string(v)
            .map(Value::Str)
            .or_else(|| strings(v).map(Value::List))
            .ok_or("must be a string or an array of strings".into()),
        Shape::Workload => match v {
            DeValue::Boolean(b) => Ok(Value::Bool(*b)),
            DeValue::String(s) => Ok(Value::Str(s.to_string())),
            _ => Err("must be KIND/NAME or true (find the workload)".into()),
        },
        Shape::Table => match v {
            DeValue::Table(t) => t
                .iter()
                .map(|(k, v)| string(v.get_ref()).map(|v| (k.get_ref().to_string(), v)))
                .collect::<Option<BTreeMap<_, _>>>()
                .map(Value::Table)
                .ok_or("must be a table of strings, like { KEY = \"value\" }".into()),
            _ => Err("must be a table of strings, like { KEY = \"value\" }".into()),
        },
        Shape::Mappings => {
            let items = strings(v).ok_or("must be an array of \"SRC[:DEST]\" strings")?;
            let resolved = items
                .iter()
                .map(|m| {
                    let raw = crate::cli::parse::parse_mapping(m).map_err(|e| e.to_string())?;
                    // A SRC is relative to the file, wherever layerup is run from.
                    let rel = raw.src.strip_prefix(".").unwrap_or(&raw.src);
                    let src = file.dir().join(rel);
                    let whole = RawMapping { src, ..raw };
                    file.keep_inside(&whole.fixed_part(), "SRC")?;
                    Ok(match whole.dest {
                        Some(d) => format!("{}:{d}", whole.src.display()),
                        None => whole.src.display().to_string(),
                    })
                })
                .collect::<std::result::Result<Vec<_>, String>>()?;
            Ok(Value::List(resolved))
        }
    }
}

fn toml_text(v: &Value) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    match v {
        Value::Str(s) => quote(s),
        Value::Int(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::List(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| quote(i))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Table(t) => format!(
            "{{ {} }}",
            t.iter()
                .map(|(k, v)| format!("{} = {}", quote(k), quote(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)], profile: Option<&str>) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let sub = dir.path().join("deep/er");
        std::fs::create_dir_all(&sub).unwrap();
        let c = Config::load(&sub, profile);
        // Paths in messages are the temporary directory's; the tests read the rest.
        c.map_err(|e| {
            Error::usage(
                e.to_string()
                    .replace(&dir.path().display().to_string(), "DIR"),
            )
        })
    }

    const BASE: &str = r#"
base = "prod/app:1.0"
to = "dev/app:dev"
env = { A = "1", B = "2" }

[registries]
prod = "registry.example.com/prod"
dev = "dev-registry.example.com/team"

[profile.local]
to = "dev/app:mine"
env = { B = "local" }

[profile.local.registries]
dev = "localhost:5000/team"
"#;

    #[test]
    fn a_profile_and_the_local_file_override_in_order_and_say_where() {
        let c = load(
            &[
                (FILE, BASE),
                (
                    LOCAL_FILE,
                    "jobs = 8\n[profile.local]\nto = \"dev/app:laptop\"\n",
                ),
            ],
            Some("local"),
        )
        .unwrap();
        assert_eq!(c.values["to"].value, Value::Str("dev/app:laptop".into()));
        assert_eq!(c.values["to"].from, "layerup.local.toml:3 [profile.local]");
        assert_eq!(c.values["base"].from, "layerup.toml:2");
        assert_eq!(c.values["jobs"].value, Value::Int(8));
        let env = BTreeMap::from([("A".into(), "1".into()), ("B".into(), "local".into())]);
        assert_eq!(c.values["env"].value, Value::Table(env));
        assert_eq!(c.expand("dev/app:x"), "localhost:5000/team/app:x");
        assert_eq!(c.expand("prod/app:1"), "registry.example.com/prod/app:1");
    }

    #[test]
    fn without_the_profile_its_values_stay_out() {
        let c = load(&[(FILE, BASE)], None).unwrap();
        assert_eq!(c.values["to"].value, Value::Str("dev/app:dev".into()));
        assert_eq!(c.expand("dev/app:x"), "dev-registry.example.com/team/app:x");
    }

    #[test]
    fn hosts_and_unknown_segments_are_not_aliases() {
        let c = load(&[(FILE, BASE)], None).unwrap();
        for r in [
            "localhost:5000/prod/app",
            "prod.io/x",
            "other/app",
            "alpine",
            "oci:prod/x",
        ] {
            assert_eq!(c.expand(r), r);
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_file_and_line() {
        let err = load(&[(FILE, "base = \"a\"\n\nregistires = 1\n")], None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("DIR/layerup.toml:3: unknown key `registires`"),
            "{err}"
        );
        let err = load(&[(FILE, "[profile.x]\njobs = \"four\"\n")], Some("x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "DIR/layerup.toml:2: `jobs` must be a whole number"
        );
        let err = load(&[(FILE, "base = \n")], None).unwrap_err();
        assert!(err.to_string().starts_with("DIR/layerup.toml:1: "), "{err}");
    }

    #[test]
    fn an_undefined_profile_lists_the_defined_ones() {
        let err = load(&[(FILE, BASE)], Some("ci")).unwrap_err();
        assert!(
            err.to_string().contains("profile `ci` is not defined")
                // One profile is one: "local is" (issue 26), not "local are".
                && err.to_string().contains("(local is)"),
            "{err}"
        );
    }

    /// Every long flag of every command, with the commands that take it.
    fn flags() -> BTreeMap<String, Vec<String>> {
        use clap::CommandFactory;
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for sub in crate::cli::args::Cli::command().get_subcommands() {
            for a in sub.get_arguments() {
                let name = a
                    .get_long()
                    .map_or_else(|| a.get_id().to_string(), str::to_string);
                out.entry(name)
                    .or_default()
                    .push(sub.get_name().to_string());
            }
        }
        out
    }

    #[test]
    fn every_key_stands_for_a_flag_that_exists() {
        let flags = flags();
        for (key, flag, shape) in KEYS {
            let flag = if *shape == Shape::Mappings {
                "mappings"
            } else {
                flag
            };
            assert!(
                flags.contains_key(flag),
                "layerup.toml key `{key}` stands for --{flag}, which no command has"
            );
        }
    }

    /// Flags that are about one run, not a project's defaults: no layerup.toml key, on purpose.
    const ONE_RUN: &[&str] = &[
        "help",
        "version",
        "verbose",
        "quiet",
        "json",
        "profile",
        "full",
        "no-build",
        "ref-file",
        "dry-run",
        "no-wait",
        "original",
        "all",
        "referrers",
        // Positional arguments of copy, deploy, rollback, inspect, config and completions.
        "from",
        "image",
        "workload",
        "shell",
        "names",
        // man's page and directory; login's and logout's (credentials never go in a file).
        "command",
        "dir",
        "registry",
        "username",
        "password",
        "password-stdin",
    ];

    #[test]
    fn every_flag_has_a_key_or_is_one_run_only() {
        for (flag, commands) in flags() {
            let keyed = KEYS.iter().any(|(_, f, shape)| {
                *f == flag || (*shape == Shape::Mappings && flag == "mappings")
            });
            assert!(
                keyed || ONE_RUN.contains(&flag.as_str()),
                "--{flag} (of {}) has no layerup.toml key: add one to KEYS or to ONE_RUN",
                commands.join(", ")
            );
        }
    }

    #[test]
    fn mappings_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE),
            "mappings = [\"./src:/app\", \"conf\"]\n",
        )
        .unwrap();
        let c = Config::load(dir.path(), None).unwrap();
        assert_eq!(
            c.values["mappings"].value,
            Value::List(vec![
                format!("{}/src:/app", dir.path().display()),
                format!("{}/conf", dir.path().display())
            ])
        );
    }
}
