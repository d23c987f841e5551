//! Platforms (`os/arch[/variant]`): parsing, the host default, and choosing one from an index.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::oci::manifest::Descriptor;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/<the host's architecture>`: images run on Linux nodes, and a developer's cluster
    /// usually has the architecture of the developer's machine (kind, k3d, Docker Desktop).
    pub fn host() -> Self {
        let (architecture, variant) = normalise_arch(std::env::consts::ARCH, None);
        Platform {
            os: "linux".into(),
            architecture,
            variant,
        }
    }

    /// An image config's platform (`os`, `architecture`, `variant` at its top level).
    pub fn of_config(config: &Value) -> Option<Platform> {
        Self::of_object(config)
    }

    /// `os`, `architecture` and `variant` of a JSON object (an image config, or an index entry's
    /// `platform`), normalised.
    fn of_object(p: &Value) -> Option<Platform> {
        let os = p.get("os")?.as_str()?.to_lowercase();
        let arch = p.get("architecture")?.as_str()?.to_lowercase();
        let variant = p
            .get("variant")
            .and_then(Value::as_str)
            .map(str::to_lowercase);
        let (architecture, variant) = normalise_arch(&arch, variant);
        Some(Platform {
            os,
            architecture,
            variant,
        })
    }

    /// Whether an image of this platform serves a request for `want`: same os and
    /// architecture, and the variant when `want` names one.
    pub fn serves(&self, want: &Platform) -> bool {
        self.matches(want, want.variant.is_some())
    }

    fn matches(&self, other: &Platform, exact_variant: bool) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (!exact_variant || self.variant == other.variant)
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            Error::usage(format!("invalid --platform `{s}`: write os/arch[/variant], like linux/amd64 or linux/arm/v7"))
        };
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let (architecture, variant) = normalise_arch(
            &parts[1].to_lowercase(),
            parts.get(2).map(|v| v.to_lowercase()),
        );
        Ok(Platform {
            os: parts[0].to_lowercase(),
            architecture,
            variant,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Normalises architecture names and default variants the way containerd's `platforms` package
/// does, so `linux/arm64` matches an entry that says `arm64/v8` and `aarch64` means `arm64`.
fn normalise_arch(arch: &str, variant: Option<String>) -> (String, Option<String>) {
    let variant = variant.filter(|v| !v.is_empty());
    match arch {
        "x86_64" | "x86-64" | "amd64" => ("amd64".into(), variant.filter(|v| v != "v1")),
        "aarch64" | "arm64" => ("arm64".into(), variant.filter(|v| v != "v8" && v != "8")),
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => (
            "arm".into(),
            Some(variant.map_or("v7".into(), |v| {
                if v.starts_with('v') {
                    v
                } else {
                    format!("v{v}")
                }
            })),
        ),
        "i386" | "i686" | "386" => ("386".into(), variant),
        other => (other.into(), variant),
    }
}

/// An index entry's platform.
pub fn entry_platform(entry: &Value) -> Option<Platform> {
    Platform::of_object(entry.get("platform")?)
}

/// Picks the image for `want` from an index's `manifests`. An exact variant match wins; without
/// one, a request that named no variant takes the first entry of that os/arch. Entries without a
/// platform, and attestations (`unknown/unknown`), never match.
pub fn select(index: &Value, want: &Platform, what: &str) -> Result<Descriptor> {
    let entries = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::image(format!("{what} has no manifests list")))?;
    let candidates: Vec<(Platform, &Value)> = entries
        .iter()
        .filter_map(|e| entry_platform(e).map(|p| (p, e)))
        .filter(|(p, _)| p.os != "unknown")
        .collect();
    let chosen = candidates
        .iter()
        .find(|(p, _)| p.matches(want, true))
        .or_else(|| {
            want.variant
                .is_none()
                .then(|| candidates.iter().find(|(p, _)| p.matches(want, false)))
                .flatten()
        });
    match chosen {
        Some((_, entry)) => Descriptor::parse(entry, &format!("{what}'s {want} entry")),
        None => {
            let have: Vec<String> = candidates.iter().map(|(p, _)| p.to_string()).collect();
            Err(Error::new(
                crate::error::ExitCode::NotFound,
                if have.is_empty() {
                    format!("{what} lists no runnable platforms")
                } else {
                    format!(
                        "{what} has no {want} image; it has {} (choose one with --platform)",
                        have.join(", ")
                    )
                },
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn fixture(name: &str) -> Value {
        let bytes = std::fs::read(format!(
            "{}/fixtures/manifests/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    const REGCTL_LIST: &str = "docker-manifest-list--regclient--3f5754829e9747db418bd1a5a40f418b073ed863cba4d57aaeaefa08118c4743.json";
    const BUILDX_INDEX: &str = "buildkit-attestation-index--actions-toolkit--5ac2d3ac39878329a6328eba5b2a6e5e7a06279244eea0f2ea893f76cefff26c.json";

    #[rstest]
    #[case("linux/amd64", "sha256:41770c11")]
    #[case("linux/s390x", "sha256:396f37cc")]
    fn picks_the_requested_platform_from_a_real_list(#[case] want: &str, #[case] prefix: &str) {
        let d = select(&fixture(REGCTL_LIST), &want.parse().unwrap(), "base").unwrap();
        assert!(d.digest.to_string().starts_with(prefix), "{}", d.digest);
    }

    #[test]
    fn arm_variants_are_told_apart() {
        let list = fixture(REGCTL_LIST);
        let v6 = select(&list, &"linux/arm/v6".parse().unwrap(), "base").unwrap();
        let v7 = select(&list, &"linux/arm/v7".parse().unwrap(), "base").unwrap();
        assert_ne!(v6.digest, v7.digest);
        let default = select(&list, &"linux/arm".parse().unwrap(), "base").unwrap();
        assert_eq!(default.digest, v7.digest, "arm without a variant means v7");
    }

    #[test]
    fn attestation_entries_are_never_chosen() {
        let index = fixture(BUILDX_INDEX);
        let err = select(&index, &"unknown/unknown".parse().unwrap(), "base").unwrap_err();
        assert!(
            err.to_string().contains("it has linux/amd64, linux/arm64"),
            "{err}"
        );
    }

    #[test]
    fn missing_platform_lists_what_exists() {
        let err = select(
            &fixture(REGCTL_LIST),
            &"windows/amd64".parse().unwrap(),
            "base index",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("base index has no windows/amd64 image; it has linux/386, linux/amd64"),
            "{msg}"
        );
        assert!(msg.ends_with("(choose one with --platform)"));
    }

    #[rstest]
    #[case("linux/aarch64", "linux/arm64")]
    #[case("linux/arm64/v8", "linux/arm64")]
    #[case("linux/x86_64", "linux/amd64")]
    #[case("linux/arm", "linux/arm/v7")]
    fn platform_names_are_normalised(#[case] given: &str, #[case] shown: &str) {
        assert_eq!(given.parse::<Platform>().unwrap().to_string(), shown);
    }

    #[rstest]
    #[case("linux")]
    #[case("linux/")]
    #[case("a/b/c/d")]
    fn malformed_platforms_are_usage_errors(#[case] given: &str) {
        let err = given.parse::<Platform>().unwrap_err();
        assert_eq!(err.code(), crate::error::ExitCode::Usage);
    }
}
