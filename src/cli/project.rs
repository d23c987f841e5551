//! A project's images: the layerup.toml found from the current directory upwards — its
//! `[images.NAME]` tables, or the one image its top level describes — and, for commands that
//! take the whole project, every layerup.toml below the current directory (hidden and
//! git-ignored directories left out), each image named by its path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::config::{Config, FILE, LOCAL_FILE};
use crate::error::{Error, Result};

/// One image of the project.
#[derive(Clone)]
pub struct Image {
    /// How commands and output name it: `api`, `services/web`, `services/shop/cart`.
    pub name: String,
    /// Its file's configuration.
    pub config: Arc<Config>,
    /// Its `[images.NAME]` table in that file; `None` for a file that is one image.
    pub table: Option<String>,
}

impl Image {
    /// The file that defines it, for messages.
    pub fn file(&self) -> String {
        self.config
            .files
            .first()
            .map_or_else(|| FILE.to_string(), |f| f.display().to_string())
    }
}

/// An image of the project, or a service whose file cannot be read (its name is its directory).
#[derive(Clone)]
pub enum Found {
    Image(Image),
    Broken { name: String, error: Error },
}

impl Found {
    pub fn name(&self) -> &str {
        match self {
            Found::Image(i) => &i.name,
            Found::Broken { name, .. } => name,
        }
    }

    /// The file that defines it, for messages.
    pub fn file(&self) -> String {
        match self {
            Found::Image(i) => i.file(),
            Found::Broken { name, .. } => format!("{name}/{FILE}"),
        }
    }
}

pub struct Project {
    /// The configuration found from the current directory upwards (today's one file).
    pub root: Arc<Config>,
    pub images: Vec<Image>,
    /// Services below whose layerup.toml cannot be read: each is its own error, the others go
    /// on.
    pub broken: Vec<(String, Error)>,
    /// `[images.NAME]` tables, or files below the current directory: output names each image.
    pub many: bool,
}

impl Project {
    /// The project seen from `cwd`; with `below`, the layerup.toml files under it too.
    /// `profile_from` says how the profile was chosen (`--profile`, `LAYERUP_PROFILE`).
    pub fn load(
        cwd: &Path,
        profile: Option<&str>,
        profile_from: &'static str,
        below: bool,
    ) -> Result<Project> {
        let mut root = Config::load(cwd, profile)?;
        root.profile_from = profile_from;
        let root = Arc::new(root);
        let mut images = images_of(&root, None);
        let mut broken = Vec::new();
        if below {
            for dir in service_dirs(cwd, root.root.as_deref())? {
                let rel = dir.strip_prefix(cwd).unwrap_or(&dir).display().to_string();
                let mut config = match Config::load_from(Some(&dir), profile, false) {
                    Ok(c) => c,
                    Err(e) => {
                        broken.push((rel, e));
                        continue;
                    }
                };
                config.profile_from = profile_from;
                images.extend(images_of(&Arc::new(config), Some(&rel)));
            }
        }
        // A service below (even a lone one) or a table names its image; only the current
        // directory's one image, alone, goes unnamed.
        let many = !broken.is_empty()
            || images
                .iter()
                .any(|i| i.table.is_some() || !i.name.is_empty());
        if many {
            // The root's one image needs a name beside the others: its directory's.
            let root_name = root
                .root
                .as_deref()
                .and_then(Path::file_name)
                .map_or("root".to_string(), |n| n.to_string_lossy().into_owned());
            for i in images.iter_mut().filter(|i| i.name.is_empty()) {
                i.name = root_name.clone();
            }
        }
        let mut seen: BTreeMap<&str, &Image> = BTreeMap::new();
        for i in &images {
            if let Some(other) = seen.insert(&i.name, i) {
                return Err(Error::usage(format!(
                    "two images are named `{}`: in {} and in {}",
                    i.name,
                    other.file(),
                    i.file()
                )));
            }
        }
        Ok(Project {
            root,
            images,
            broken,
            many,
        })
    }

    /// Every image, then every broken service.
    pub fn all(&self) -> Vec<Found> {
        let mut all: Vec<Found> = self.images.iter().cloned().map(Found::Image).collect();
        all.extend(self.broken.iter().map(|(name, error)| Found::Broken {
            name: name.clone(),
            error: error.clone(),
        }));
        all
    }

    /// Every name: the images' and the broken services'.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.images
            .iter()
            .map(|i| i.name.as_str())
            .chain(self.broken.iter().map(|(n, _)| n.as_str()))
    }

    /// The images (or broken services) `names` name, when every one of them names one.
    pub fn select(&self, names: &[String]) -> Option<Vec<Found>> {
        let all = self.all();
        names
            .iter()
            .map(|n| all.iter().find(|f| f.name() == n).cloned())
            .collect()
    }
}

/// The images one file describes: its `[images.NAME]` tables, else its top level when that
/// names a base, a destination or files. `dir` is the file's directory relative to the current
/// one (`None` for the project root's).
fn images_of(config: &Arc<Config>, dir: Option<&str>) -> Vec<Image> {
    let named = |n: &str| match dir {
        Some(d) => format!("{d}/{n}"),
        None => n.to_string(),
    };
    if !config.images.is_empty() {
        return config
            .images
            .keys()
            .map(|t| Image {
                name: named(t),
                config: config.clone(),
                table: Some(t.clone()),
            })
            .collect();
    }
    let is_image = ["base", "to", "mappings"]
        .iter()
        .any(|k| config.values.contains_key(*k));
    if !is_image {
        return Vec::new();
    }
    vec![Image {
        name: dir.map(str::to_string).unwrap_or_default(),
        config: config.clone(),
        table: None,
    }]
}

/// Directories below `cwd` (not `root`'s own) holding a layerup.toml, in path order. Hidden
/// directories, git-ignored ones and `node_modules` are not looked into.
fn service_dirs(cwd: &Path, root: Option<&Path>) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    let walk = ignore::WalkBuilder::new(cwd)
        .hidden(true)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .require_git(false)
        .parents(true)
        .filter_entry(|e| e.file_name() != "node_modules")
        .build();
    for entry in walk {
        let entry =
            entry.map_err(|e| Error::input(format!("cannot look for {FILE} files: {e}")))?;
        let name = entry.file_name();
        if name != FILE && name != LOCAL_FILE {
            continue;
        }
        let Some(dir) = entry.path().parent() else {
            continue;
        };
        if Some(dir) == root || dirs.last().is_some_and(|d: &PathBuf| d == dir) {
            continue;
        }
        dirs.push(dir.to_path_buf());
    }
    dirs.sort();
    dirs.dedup();
    Ok(dirs)
}
