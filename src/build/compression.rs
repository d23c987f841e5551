//! How the layers layerup writes are compressed: gzip (the default, read by every runtime) or zstd
//! (`--compression zstd[:LEVEL]`), the media type each gives, and the reader for each.

use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::oci::manifest::Family;

/// The media type of a zstd layer (image-spec 1.1; no Docker schema 2 equivalent).
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// zstd's level when none is given: see docs/design.md ("Compression") for the measurement.
pub const ZSTD_DEFAULT_LEVEL: i32 = 6;

/// A layer's compression, as recorded with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    #[default]
    Gzip,
    Zstd,
}

impl Codec {
    pub fn is_gzip(&self) -> bool {
        *self == Codec::Gzip
    }

    /// The layer's media type in an image of `family`; zstd has none in Docker schema 2.
    pub fn media_type(self, family: Family, base: &str) -> Result<&'static str> {
        match (self, family) {
            (Codec::Gzip, f) => Ok(f.layer_gzip()),
            (Codec::Zstd, Family::Oci) => Ok(OCI_LAYER_ZSTD),
            (Codec::Zstd, Family::Docker) => Err(Error::usage(format!(
                "zstd layers need an OCI image, and the base `{base}` is Docker schema 2, which \
                 has no zstd layer type: give --compression gzip, or --format oci to make the new image OCI"
            ))),
        }
    }

    /// The uncompressed tar of a layer blob of this codec.
    pub fn reader<'a>(self, blob: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
            Codec::Zstd => Box::new(zstd::stream::read::Decoder::new(blob)?),
        })
    }
}

/// `--compression`: the codec, and zstd's level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd(i32),
}

impl Compression {
    pub fn codec(self) -> Codec {
        match self {
            Compression::Gzip => Codec::Gzip,
            Compression::Zstd(_) => Codec::Zstd,
        }
    }

    /// `gzip`, `zstd` or `zstd:LEVEL` (1–19).
    pub fn parse(text: &str) -> Result<Compression> {
        let bad = || {
            Error::usage(format!(
                "--compression `{text}`: give gzip, zstd or zstd:LEVEL (LEVEL 1 to 19)"
            ))
        };
        match text.split_once(':') {
            None if text == "gzip" => Ok(Compression::Gzip),
            None if text == "zstd" => Ok(Compression::Zstd(ZSTD_DEFAULT_LEVEL)),
            Some(("zstd", level)) => match level.parse::<i32>() {
                Ok(l) if (1..=19).contains(&l) => Ok(Compression::Zstd(l)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_users_write_and_refuses_the_rest() {
        assert_eq!(Compression::parse("gzip").unwrap(), Compression::Gzip);
        assert_eq!(
            Compression::parse("zstd").unwrap(),
            Compression::Zstd(ZSTD_DEFAULT_LEVEL)
        );
        assert_eq!(
            Compression::parse("zstd:19").unwrap(),
            Compression::Zstd(19)
        );
        for bad in ["zstd:0", "zstd:20", "zstd:x", "gzip:5", "xz", ""] {
            let e = Compression::parse(bad).unwrap_err();
            assert!(
                e.to_string().contains("give gzip, zstd or zstd:LEVEL"),
                "{e}"
            );
        }
    }

    #[test]
    fn zstd_on_any_number_of_cores_writes_the_same_bytes() {
        use std::io::Write;
        // 24 MiB that compress somewhat, so that several jobs run at once.
        let mut data = Vec::with_capacity(24 << 20);
        let mut x: u64 = 1;
        while data.len() < 24 << 20 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            data.extend_from_slice(format!("{} ", x >> 50).as_bytes());
        }
        let outs: Vec<Vec<u8>> = [1u32, 2, 3, 8]
            .iter()
            .map(|&workers| {
                let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
                z.multithread(workers).unwrap();
                z.write_all(&data).unwrap();
                z.finish().unwrap()
            })
            .collect();
        assert!(outs.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn zstd_is_an_oci_layer_only() {
        assert_eq!(
            Codec::Zstd.media_type(Family::Oci, "b").unwrap(),
            OCI_LAYER_ZSTD
        );
        let e = Codec::Zstd
            .media_type(Family::Docker, "prod/app:1")
            .unwrap_err();
        assert!(
            e.to_string().contains("`prod/app:1` is Docker schema 2"),
            "{e}"
        );
        assert_eq!(
            Codec::Gzip.media_type(Family::Docker, "b").unwrap(),
            crate::oci::manifest::DOCKER_LAYER_GZIP
        );
    }

    #[test]
    fn a_layer_recorded_before_zstd_existed_reads_as_gzip() {
        #[derive(Deserialize)]
        struct L {
            #[serde(default)]
            codec: Codec,
        }
        let l: L = serde_json::from_str("{}").unwrap();
        assert_eq!(l.codec, Codec::Gzip);
    }
}
