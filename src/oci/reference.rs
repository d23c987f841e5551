//! Image references: docker-style `name[:tag][@digest]` (normalised as docker does) and
//! `oci:DIR[:TAG|@DIGEST]` for an OCI image layout on disk.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use oci_spec::distribution::Reference;
use oci_spec::image::Digest;

use crate::error::{Error, Result};

/// Where an image is read from or written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A repository in a registry; always has a tag or a digest (docker's default tag is `latest`).
    Registry(Reference),
    /// An OCI image layout directory (image-spec `image-layout.md`).
    Layout(LayoutRef),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRef {
    pub dir: PathBuf,
    /// The `org.opencontainers.image.ref.name` of the manifest in `index.json`.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses what a user typed. `what` names the flag or argument for the error message.
    pub fn parse(input: &str, what: &str) -> Result<Self> {
        let bad = |reason: String| Error::usage(format!("invalid {what} `{input}`: {reason}"));
        if let Some(rest) = input.strip_prefix("oci:") {
            return parse_layout(rest).map(ImageRef::Layout).map_err(bad);
        }
        // skopeo users type the transport; it means the same thing here.
        let name = input.strip_prefix("docker://").unwrap_or(input);
        if name.trim() != name || name.is_empty() {
            return Err(bad("a reference has no spaces and is not empty".into()));
        }
        let reference = parse_docker(name).ok_or_else(|| bad(explain(name)))?;
        if reference.repository().is_empty() {
            return Err(bad("it has no repository name".into()));
        }
        // oci-spec takes `Prod/x` as docker.io/Prod/x; docker refuses it, and so do registries.
        if reference
            .repository()
            .chars()
            .any(|c| c.is_ascii_uppercase())
        {
            return Err(bad("repository names are lowercase".into()));
        }
        Ok(ImageRef::Registry(reference))
    }

    /// The same image, named by digest: what layerup prints, and what a workload should run.
    pub fn pinned(&self, digest: &Digest) -> String {
        match self {
            ImageRef::Registry(r) => format!("{}/{}@{digest}", r.registry(), r.repository()),
            ImageRef::Layout(l) => format!("oci:{}@{digest}", l.dir.display()),
        }
    }

    /// The registry host (`host[:port]`), for registry references.
    pub fn registry(&self) -> Option<&str> {
        match self {
            ImageRef::Registry(r) => Some(r.resolve_registry()),
            ImageRef::Layout(_) => None,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => write!(f, "{}", r.whole()),
            ImageRef::Layout(l) => {
                write!(f, "oci:{}", l.dir.display())?;
                if let Some(t) = &l.tag {
                    write!(f, ":{t}")?;
                }
                if let Some(d) = &l.digest {
                    write!(f, "@{d}")?;
                }
                Ok(())
            }
        }
    }
}

/// Parses `[domain/]path[:tag][@digest]` by the distribution reference grammar and normalises it as
/// docker does (`docker.io`, `library/`, `latest`). Written here rather than taken from oci-spec's
/// `Reference::try_from`, whose one regex (counted repetitions, Unicode classes) costs ~16 MiB of
/// memory to compile — half of what a whole `layerup copy` of a 1 GiB image needs otherwise.
fn parse_docker(s: &str) -> Option<Reference> {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let (alg, hex) = d.split_once(':')?;
        let want = match alg {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return None,
        };
        if hex.len() != want || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
    }
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if tag.is_some_and(|t| !is_tag(t)) {
        return None;
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first), rest)
        }
        _ => (None, name),
    };
    if domain.is_some_and(|d| !is_domain(d)) || !path.split('/').all(is_path_component) {
        return None;
    }
    let registry = match domain {
        None | Some("index.docker.io") => "docker.io",
        Some(d) => d,
    };
    let repository = if registry == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    if repository.len() > 255 {
        return None;
    }
    let (registry, digest) = (registry.to_string(), digest.map(str::to_string));
    Some(match (tag, digest) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(registry, repository, t.into(), d),
        (None, Some(d)) => Reference::with_digest(registry, repository, d),
        (t, None) => Reference::with_tag(registry, repository, t.unwrap_or("latest").into()),
    })
}

/// `host[:port]`: dot-separated labels of letters, digits and inner hyphens; or an IPv6 address
/// in brackets (`[::1]:5000`), as the distribution reference grammar allows.
fn is_domain(d: &str) -> bool {
    if let Some(rest) = d.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        let port_ok = match after.strip_prefix(':') {
            Some(p) => !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()),
            None => after.is_empty(),
        };
        return port_ok && ip.parse::<std::net::Ipv6Addr>().is_ok();
    }
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    host.split('.').all(label)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// Which part of a name that does not parse is wrong, in words.
fn explain(name: &str) -> String {
    let (path, digest) = match name.split_once('@') {
        Some((p, d)) => (p, Some(d)),
        None => (name, None),
    };
    if name.chars().any(char::is_whitespace) {
        return "a reference has no spaces".into();
    }
    if let Some(d) = digest {
        if d.parse::<Digest>().is_err() || !d.starts_with("sha256:") {
            return format!("`{d}` is not a digest (sha256: followed by 64 hex digits)");
        }
    }
    // The tag is what follows the last ':' after the last '/' (a ':' before it is a port).
    let last = path.rsplit('/').next().unwrap_or(path);
    let (repo_part, tag) = match last.split_once(':') {
        Some((_, t)) => (&path[..path.len() - t.len() - 1], Some(t)),
        None => (path, None),
    };
    if let Some(t) = tag {
        if !is_tag(t) {
            return format!("`{t}` is not a tag (up to 128 letters, digits, `_`, `.`, `-`)");
        }
    }
    let repo_path = match repo_part.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
        _ => repo_part,
    };
    if repo_path.chars().any(|c| c.is_ascii_uppercase()) {
        return "repository names are lowercase".into();
    }
    "write [registry/]repository[:tag][@sha256:digest]".into()
}

fn parse_layout(rest: &str) -> std::result::Result<LayoutRef, String> {
    let (dir, tag, digest) = if let Some((dir, digest)) = rest.rsplit_once('@') {
        let digest: Digest = digest
            .parse()
            .map_err(|e| format!("bad digest `{digest}`: {e}"))?;
        (dir, None, Some(digest))
    } else {
        // As skopeo's `oci:` transport: the first `:` ends the path, and what follows is a tag.
        // A tag that is not one (`../../evil`) is an error, never a path to write to.
        match rest.split_once(':') {
            Some((dir, tag)) if is_tag(tag) => (dir, Some(tag.to_string()), None),
            Some((_, tag)) => {
                return Err(format!(
                    "`{tag}` is not a tag (letters, digits, `_`, `.` and `-`, at most 128, not \
                     starting with `.` or `-`); a layout directory cannot hold `:`"
                ))
            }
            None => (rest, None, None),
        }
    };
    if dir.is_empty() {
        return Err("the layout directory is empty (write `oci:DIR[:TAG]`)".into());
    }
    Ok(LayoutRef {
        dir: PathBuf::from(dir),
        tag,
        digest,
    })
}

/// The repository an image reference names, normalised (`nginx:1` is `docker.io/library/nginx`):
/// how a workload's container image is matched against the base and destination. `None` when
/// the reference does not parse.
pub fn repository_of(image: &str) -> Option<String> {
    let r = parse_docker(image)?;
    Some(format!("{}/{}", r.registry(), r.repository()))
}

/// `host[:port]`, as the registry part of a reference (`--cluster-registry`).
pub fn is_registry_host(s: &str) -> bool {
    is_domain(s) && (s.contains(['.', ':']) || s == "localhost")
}

/// The distribution spec's tag grammar: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_tag(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Registries on loopback are spoken to over plain HTTP, as docker does for `localhost` and
/// `127.0.0.0/8` ("insecure registries" that need no configuration).
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        // [::1]:5000
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => registry.rsplit_once(':').map_or(registry, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                registry
            }
        }),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("alpine", "docker.io/library/alpine:latest")]
    #[case("prod/app:1.0", "docker.io/prod/app:1.0")]
    #[case("docker://prod/app:1.0", "docker.io/prod/app:1.0")]
    #[case("localhost:5000/dev/app", "localhost:5000/dev/app:latest")]
    #[case("[::1]:5000/prod/app:1.0", "[::1]:5000/prod/app:1.0")]
    #[case("[fe80::1]/app", "[fe80::1]/app:latest")]
    #[case("127.0.0.1:5000/dev/app:dev", "127.0.0.1:5000/dev/app:dev")]
    #[case(
        "registry.example.com/prod/app:1.0",
        "registry.example.com/prod/app:1.0"
    )]
    #[case("index.docker.io/alpine:3", "docker.io/library/alpine:3")]
    #[case(
        "reg.example/a__b/c-d--e/f.g_h",
        "reg.example/a__b/c-d--e/f.g_h:latest"
    )]
    #[case(
        "reg.example:443/app:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "reg.example:443/app:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )]
    fn registry_references_follow_docker_normalisation(#[case] input: &str, #[case] whole: &str) {
        assert_eq!(ImageRef::parse(input, "ref").unwrap().to_string(), whole);
    }

    #[rstest]
    #[case("oci:./mirror", "./mirror", None)]
    #[case("oci:./mirror:app", "./mirror", Some("app"))]
    #[case("oci:/tmp/a:b", "/tmp/a", Some("b"))]
    fn layout_references_split_dir_and_tag(
        #[case] input: &str,
        #[case] dir: &str,
        #[case] tag: Option<&str>,
    ) {
        let ImageRef::Layout(l) = ImageRef::parse(input, "ref").unwrap() else {
            panic!("not a layout")
        };
        assert_eq!(l.dir, PathBuf::from(dir));
        assert_eq!(l.tag.as_deref(), tag);
    }

    #[rstest]
    #[case("oci:./out:../../evil")]
    #[case("oci:/tmp/a:b/c")]
    #[case("oci:./out:")]
    fn a_layout_tag_that_is_not_a_tag_is_refused_never_a_path(#[case] input: &str) {
        let err = ImageRef::parse(input, "--to").unwrap_err();
        assert!(err.to_string().contains("is not a tag"), "{err}");
    }

    #[test]
    fn layout_reference_may_pin_a_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("oci:out@{d}"), "ref").unwrap();
        assert_eq!(r.to_string(), format!("oci:out@{d}"));
    }

    #[rstest]
    #[case("Prod/App:1", "repository names are lowercase")]
    #[case("Prod/x", "repository names are lowercase")]
    #[case("app:bad tag", "a reference has no spaces")]
    #[case("app@sha256:abc", "`sha256:abc` is not a digest")]
    #[case("app:-x", "`-x` is not a tag")]
    #[case(
        "reg.example/a//b",
        "write [registry/]repository[:tag][@sha256:digest]"
    )]
    #[case("", "not empty")]
    #[case("oci:", "the layout directory is empty")]
    #[case("reg.example/a___b", "write [registry/]")]
    #[case("reg.example/-a", "write [registry/]")]
    #[case("-reg.example/a", "write [registry/]")]
    #[case("reg.example:port/a", "write [registry/]")]
    #[case("app@md5:0123456789abcdef0123456789abcdef", "is not a digest")]
    fn malformed_references_say_why(#[case] input: &str, #[case] reason: &str) {
        let err = ImageRef::parse(input, "--base").unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("invalid --base `{input}`")),
            "{err}"
        );
        assert!(err.contains(reason), "{err}");
    }

    #[test]
    fn pinned_reference_names_registry_repository_and_digest() {
        let r = ImageRef::parse("localhost:5000/dev/app:dev", "ref").unwrap();
        let d = crate::oci::digest::sha256(b"x");
        assert_eq!(r.pinned(&d), format!("localhost:5000/dev/app@{d}"));
    }

    #[rstest]
    #[case("localhost", true)]
    #[case("localhost:5000", true)]
    #[case("127.0.0.1:5000", true)]
    #[case("127.8.9.10", true)]
    #[case("[::1]:5000", true)]
    #[case("registry.example.com", false)]
    #[case("10.0.0.1:5000", false)]
    #[case("localhost.evil.com:5000", false)]
    fn loopback_registries_are_recognised(#[case] host: &str, #[case] expected: bool) {
        assert_eq!(is_loopback(host), expected);
    }
}
