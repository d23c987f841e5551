//! Which edits re-run an image's build under `watch`: its `build-deps` globs, or by default
//! every file of its directory less the mapped sources, `.git` and what its `.gitignore` files
//! name (the directory's and those below it, each for its own subtree, as git reads them).

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::commands::build_step::BuildStep;
use crate::error::{Error, Result};

/// An image's build inputs.
#[derive(Debug)]
pub struct Deps {
    /// The build's directory, absolute, as events name it.
    pub dir: PathBuf,
    /// `build-deps`, relative to `dir`; `None`: the default.
    globs: Option<GlobSet>,
    /// Those of them that reach above `dir` (`../pkg/**`).
    above: Option<GlobSet>,
    /// The default leaves out the mapped sources (the build's outputs, or files pushed as they
    /// are) and what `.gitignore` files ignore (found when the watch starts; deepest first).
    sources: Vec<PathBuf>,
    gitignores: Vec<Gitignore>,
}

impl Deps {
    /// `sources`: the image's mapped sources, absolute.
    pub fn new(step: &BuildStep, sources: &[PathBuf]) -> Result<Deps> {
        let dir = std::fs::canonicalize(&step.dir)
            .map_err(|e| Error::io("read the build's directory", &step.dir, &e))?;
        let (up, down): (Vec<String>, Vec<String>) = step
            .deps
            .iter()
            .cloned()
            .partition(|p| p.starts_with("../"));
        let above = match up.as_slice() {
            [] => None,
            up => Some(globs(up)?),
        };
        let globs = match step.deps.as_slice() {
            [] => None,
            _ => Some(globs(&down)?),
        };
        let gitignores = match &globs {
            Some(_) => Vec::new(),
            None => gitignores(&dir),
        };
        // The directory itself mapped whole: its files are still the build's inputs.
        let sources = sources.iter().filter(|s| **s != dir).cloned().collect();
        Ok(Deps {
            dir,
            globs,
            above,
            sources,
            gitignores,
        })
    }

    /// The directories to watch for it: the build's, and those `build-deps` reach above it
    /// (`../pkg/**`: a monorepo's shared code).
    pub fn roots(&self, step: &BuildStep) -> Vec<PathBuf> {
        let mut roots = vec![self.dir.clone()];
        for p in step.deps.iter().filter(|p| p.starts_with("../")) {
            let fixed: PathBuf = Path::new(p)
                .components()
                .take_while(|c| {
                    !c.as_os_str()
                        .to_string_lossy()
                        .contains(['*', '?', '[', '{'])
                })
                .collect();
            if let Ok(root) = std::fs::canonicalize(self.dir.join(fixed)) {
                roots.push(root);
            }
        }
        roots
    }

    /// Whether an edit of `path` (absolute) re-runs the build.
    pub fn matches(&self, path: &Path) -> bool {
        if path.components().any(|c| c.as_os_str() == ".git") {
            return false;
        }
        match (&self.globs, path.strip_prefix(&self.dir)) {
            (Some(g), Ok(rel)) => g.is_match(rel),
            // Above the build's directory: as `../` patterns name it.
            (Some(_), Err(_)) => self
                .above
                .as_ref()
                .is_some_and(|g| relative(path, &self.dir).is_some_and(|rel| g.is_match(rel))),
            (None, Ok(_)) => {
                !self.sources.iter().any(|s| path.starts_with(s)) && !self.ignored(path)
            }
            (None, Err(_)) => false,
        }
    }
}

impl Deps {
    /// Whether a `.gitignore` above `path` ignores it: the deepest one that has a say decides
    /// (a `!pattern` below re-includes what one above left out).
    fn ignored(&self, path: &Path) -> bool {
        for g in &self.gitignores {
            let Ok(rel) = path.strip_prefix(g.path()) else {
                continue;
            };
            match g.matched_path_or_any_parents(rel, false) {
                ignore::Match::Ignore(_) => return true,
                ignore::Match::Whitelist(_) => return false,
                ignore::Match::None => {}
            }
        }
        false
    }
}

/// Every `.gitignore` in `dir` and below it, each rooted at its own directory, deepest first;
/// directories they ignore are not looked into (a `node_modules` is not walked).
fn gitignores(dir: &Path) -> Vec<Gitignore> {
    let mut found: Vec<Gitignore> = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .require_git(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() == ".gitignore" && e.file_type().is_some_and(|t| t.is_file()))
        .filter_map(|e| {
            let root = e.path().parent()?;
            let mut b = GitignoreBuilder::new(root);
            b.add(e.path());
            b.build().ok()
        })
        .collect();
    found.sort_by_key(|g| std::cmp::Reverse(g.path().components().count()));
    found
}

/// `path` as seen from `dir` (both absolute), through `..` where it is not below it.
fn relative(path: &Path, dir: &Path) -> Option<PathBuf> {
    let mut up = PathBuf::new();
    for above in dir.ancestors() {
        if let Ok(rest) = path.strip_prefix(above) {
            return Some(up.join(rest));
        }
        up.push("..");
    }
    None
}

/// `build-deps` patterns: `*` stays within a directory, `**` crosses them, and a pattern that
/// names a directory covers what is inside it.
pub fn globs(patterns: &[String]) -> Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let p = p.trim_start_matches("./").trim_end_matches('/');
        if p.starts_with('/') {
            return Err(Error::usage(format!(
                "build-deps `{p}` must be relative to the build's directory (`../lib/**` reaches above it)"
            )));
        }
        for p in [p.to_string(), format!("{p}/**")] {
            let glob = GlobBuilder::new(&p)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::usage(format!("build-deps `{p}` is not a pattern: {e}")))?;
            set.add(glob);
        }
    }
    set.build()
        .map_err(|e| Error::usage(format!("build-deps: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(dir: &Path, patterns: &[&str], sources: &[&str]) -> Deps {
        let step = BuildStep {
            command: "make".into(),
            dir: dir.to_path_buf(),
            deps: patterns.iter().map(|p| p.to_string()).collect(),
        };
        let dir = std::fs::canonicalize(dir).unwrap();
        let sources: Vec<PathBuf> = sources.iter().map(|s| dir.join(s)).collect();
        Deps::new(&step, &sources).unwrap()
    }

    #[test]
    fn by_default_every_file_but_the_outputs_git_and_the_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(".gitignore"), "*.o\ntarget/\n").unwrap();
        let d = deps(tmp.path(), &[], &["out"]);
        let at = |p: &str| d.dir.join(p);
        assert!(d.matches(&at("main.c")));
        assert!(d.matches(&at("lib/util.c")));
        assert!(!d.matches(&at("out/app")));
        assert!(!d.matches(&at("main.o")));
        assert!(!d.matches(&at("target/debug/app")));
        assert!(!d.matches(&at(".git/index")));
        assert!(!d.matches(Path::new("/elsewhere/main.c")));
    }

    #[test]
    fn a_gitignore_below_speaks_for_its_own_directory() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(".gitignore"), "*.log\n").unwrap();
        std::fs::create_dir_all(tmp.path().join("web/dist")).unwrap();
        std::fs::write(tmp.path().join("web/.gitignore"), "/dist\n!keep.log\n").unwrap();
        std::fs::create_dir_all(tmp.path().join("node_modules/x")).unwrap();
        std::fs::write(tmp.path().join(".gitignore"), "*.log\nnode_modules/\n").unwrap();
        std::fs::write(tmp.path().join("node_modules/x/.gitignore"), "*.c\n").unwrap();
        let d = deps(tmp.path(), &[], &[]);
        let at = |p: &str| d.dir.join(p);
        assert!(!d.matches(&at("web/dist/app.js")));
        assert!(d.matches(&at("dist/app.js")), "anchored to web/ only");
        assert!(!d.matches(&at("web/debug.log")));
        assert!(d.matches(&at("web/keep.log")), "re-included below");
        assert!(d.matches(&at("web/src/main.ts")));
        assert!(
            d.matches(&at("main.c")),
            "an ignored directory's own file says nothing here"
        );
    }

    #[test]
    fn build_deps_say_exactly_what() {
        let tmp = tempfile::tempdir().unwrap();
        let d = deps(tmp.path(), &["**/*.go", "go.mod", "./cmd/"], &["out"]);
        let at = |p: &str| d.dir.join(p);
        assert!(d.matches(&at("main.go")));
        assert!(d.matches(&at("pkg/a/b.go")));
        assert!(d.matches(&at("go.mod")));
        assert!(d.matches(&at("cmd/api/README")));
        assert!(!d.matches(&at("go.sum")));
        assert!(!d.matches(&at("docs/x.md")));
    }

    #[test]
    fn build_deps_reach_above_the_directory_with_dot_dot() {
        let tmp = tempfile::tempdir().unwrap();
        let svc = tmp.path().join("services/api");
        std::fs::create_dir_all(&svc).unwrap();
        std::fs::create_dir_all(tmp.path().join("pkg/util")).unwrap();
        let step = BuildStep {
            command: "go build".into(),
            dir: svc.clone(),
            deps: vec!["**/*.go".into(), "../../pkg/**/*.go".into()],
        };
        let d = Deps::new(&step, &[]).unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        assert!(d.matches(&root.join("services/api/main.go")));
        assert!(d.matches(&root.join("pkg/util/strings.go")));
        assert!(!d.matches(&root.join("pkg/util/README.md")));
        assert!(!d.matches(&root.join("services/web/main.go")));
        assert_eq!(
            d.roots(&step),
            vec![root.join("services/api"), root.join("pkg")]
        );
        assert!(globs(&["/etc/**".into()]).is_err());
    }

    #[test]
    fn a_bad_pattern_is_a_usage_error() {
        let e = globs(&["a[".into()]).unwrap_err();
        assert_eq!(e.code(), crate::error::ExitCode::Usage);
        assert!(e.to_string().contains("build-deps `a[`"), "{e}");
    }
}
