//! Basic types, pure and at the bottom: references, digests, media types and descriptors,
//! platforms, and blob bytes on the move.

pub mod digest;
pub mod manifest;
pub mod platform;
pub mod reference;
pub mod stream;

/// A real manifest, index or config from `fixtures/manifests` (see its README for provenance).
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/fixtures/manifests/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}
