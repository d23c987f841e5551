//! The new image of one push, made without a network: the app layers (a delta on the last push,
//! or the full layer in parts: `stack`), each platform's own layer (`per_platform`), each
//! platform's image (`image`), and the index of them when there are several — with what is
//! known of their blobs in the destination, and the state to remember for the next push.

use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;

use oci_spec::image::Digest;

use crate::build::base::{Base, BaseIndex};
use crate::build::compression::{Codec, Compression};
use crate::build::entry::{Own, RawMapping};
use crate::build::image::{self, Image, NewLayer, Tweaks};
use crate::build::lower::Lower;
use crate::build::per_platform;
use crate::build::stack::{self, FullReason, Mode, Squash};
use crate::build::state::{Loaded, State};
use crate::build::tree::Walked;
use crate::error::{Error, Result};
use crate::oci::manifest::{Descriptor, Document};
use crate::oci::platform::Platform;

/// What the new image is made from: what the reads found, and the plan's settings.
pub struct Input {
    /// The base's image for each platform, with its entry in the base's index.
    pub bases: Vec<(Descriptor, Base)>,
    /// The base's index, when the push makes one (several platforms).
    pub index: Option<BaseIndex>,
    /// What each platform's base layers hold, in `bases`' order.
    pub lowers: Vec<Lower>,
    /// The last push's state, and whether the destination still holds its image.
    pub last: Loaded,
    pub held: bool,
    /// The tree as walked (or brought up to date from file events).
    pub tree: Walked,
    /// The mappings with `{os}`/`{arch}` in SRC: a layer of their own per platform.
    pub per_platform: Vec<RawMapping>,
    /// Their sources must stay inside this directory (they come from a committed file).
    pub confined: Option<PathBuf>,
    /// The working directory mappings land relative to.
    pub workdir: String,
    pub owner: Option<(u32, u32)>,
    pub ignore: Vec<String>,
    /// layerup's own paths: never in a layer.
    pub own: Vec<Own>,
    pub mtime: u64,
    /// How the layers this push writes are compressed.
    pub compression: Compression,
    pub tweaks: Tweaks,
    /// `--full`.
    pub full: bool,
    pub squash: Squash,
    /// The destination as the user named it, for messages.
    pub dest_name: String,
    /// Keep the delta, uncompressed, in [`NewImage::delta`] (`watch --sync` applies it).
    pub keep_delta: bool,
    /// Where the layer blobs are written.
    pub dir: PathBuf,
}

/// The new image, computed: every layer and manifest it needs, serialised once.
pub struct NewImage {
    pub mode: Mode,
    /// Entries in the tree.
    pub entries: usize,
    /// The layers this push wrote (the full app layer's parts, or the delta) and their files.
    pub uploads: Vec<(NewLayer, PathBuf)>,
    /// Each platform's own layer, in the images' order (none without per-platform mappings).
    pub per_platform: Vec<per_platform::Built>,
    /// A per-platform layer differs from the last push's: the delta alone does not say what the
    /// image now holds.
    pub platform_files_changed: bool,
    /// Each platform's image, in the index's order.
    pub images: Vec<Image>,
    /// With several platforms: the index naming `images`, written last.
    pub index: Option<Document>,
    /// With several platforms: each one and its image's digest (none for one image).
    pub platforms: Vec<(Platform, Digest)>,
    /// Blobs known to be in the destination: the last push's image, which names them, is.
    pub present: HashSet<Digest>,
    /// The state for the next push differs from the one saved: write it.
    pub save: bool,
    /// With [`Input::keep_delta`]: the changes since the last push as one uncompressed layer
    /// (empty when nothing changed); `None` when there was no last push to compare with.
    pub delta: Option<Vec<u8>>,
}

impl NewImage {
    /// The document the destination's tag names: the one image, or the index of several.
    pub fn top(&self) -> &Document {
        self.index
            .as_ref()
            .unwrap_or_else(|| &self.images[0].manifest)
    }

    /// The manifests written before the top one: an index's images.
    pub fn children(&self) -> Vec<Document> {
        match &self.index {
            Some(_) => self.images.iter().map(|i| i.manifest.clone()).collect(),
            None => Vec::new(),
        }
    }
}

/// Makes the new image: the app layers, the per-platform layers, the images and the index; and
/// the state to remember once it is pushed. Reads and compresses files: run it off the async
/// threads.
pub fn make(input: Input) -> Result<(NewImage, Box<State>)> {
    let Input {
        bases,
        index,
        lowers,
        last,
        held,
        tree,
        per_platform: raw,
        confined,
        workdir,
        owner,
        ignore,
        own,
        mtime,
        compression,
        tweaks,
        full,
        squash,
        dest_name,
        keep_delta,
        dir,
    } = input;
    // The base as the state knows it: its index when it is one, else its image.
    let (base_digest, base_name) = match &index {
        Some(i) => (i.digest.clone(), i.name.clone()),
        None => (bases[0].1.digest.clone(), bases[0].1.name.clone()),
    };
    let found = match &last {
        Loaded::Found(s) => Some(s.as_ref()),
        _ => None,
    };
    let last_image = found.map(|s| s.image.clone());
    // The tags the last pushes left, kept through full pushes too.
    let ref_tags = found.map(|s| s.ref_tags.clone()).unwrap_or_default();
    let present = present(found.filter(|_| held), &base_digest, &bases);
    // Used again only while the destination holds the image that names them.
    let last_platform_layers = found
        .filter(|_| held)
        .map(|s| s.platform_layers.clone())
        .unwrap_or_default();
    let base = (base_digest, base_name.as_str());
    let lowers = std::sync::Arc::new(lowers);
    let plan = AppPlan {
        lowers: lowers.clone(),
        owner,
        mtime,
        compression,
        full,
        squash,
        dest_name: &dest_name,
        dir: &dir,
    };
    let stack::Built {
        mode,
        app,
        uploads,
        next,
        entries,
        restat,
    } = app_layers(tree, last, held, base, &plan)?;
    let last_digests: Vec<Digest> = last_platform_layers
        .iter()
        .map(|l| l.layer.digest.clone())
        .collect();
    let settings = per_platform::Settings {
        owner,
        ignore,
        own,
        mtime,
        compression,
    };
    let per_platform = platform_layers(
        &raw,
        (&bases, &lowers, &workdir, confined.as_deref()),
        &dir,
        &settings,
        last_platform_layers,
    )?;
    let platform_files_changed = !per_platform.is_empty()
        && per_platform
            .iter()
            .map(|b| &b.made.layer.digest)
            .ne(last_digests.iter());
    // The delta as written (also when a squash pushed the full layer instead: it says what
    // changed since the last push).
    let delta = match (&mode, keep_delta) {
        (_, false) => None,
        (Mode::Unchanged, true) => Some(Vec::new()),
        // A first push or a full one for a reason other than squashing wrote no delta file.
        (_, true) => read_delta(&dir.join(stack::DELTA_FILE), compression.codec())?,
    };
    let (images, index, platforms) = images(&bases, index, &app, &per_platform, &tweaks, mtime)?;
    let mut made = NewImage {
        platforms,
        mode,
        entries,
        uploads,
        per_platform,
        platform_files_changed,
        images,
        index,
        present,
        save: false,
        delta,
    };
    let top = made.top().digest.clone();
    made.save = !(made.mode == Mode::Unchanged && !restat && last_image.as_ref() == Some(&top));
    let mut next = Box::new(next);
    next.image = top;
    next.platform_layers = made.per_platform.iter().map(|b| b.made.clone()).collect();
    next.ref_tags = ref_tags;
    Ok((made, next))
}

/// What shapes the app layers besides the tree and the last push.
struct AppPlan<'a> {
    lowers: std::sync::Arc<Vec<Lower>>,
    owner: Option<(u32, u32)>,
    mtime: u64,
    compression: Compression,
    full: bool,
    squash: Squash,
    dest_name: &'a str,
    dir: &'a std::path::Path,
}

/// The app layers: a delta on the last push when it can be stacked, else the full layer in
/// parts (see [`stack::layers`]). `base` is the base's digest and name as the state knows them.
fn app_layers(
    tree: Walked,
    last: Loaded,
    held: bool,
    (base, base_name): (Digest, &str),
    plan: &AppPlan,
) -> Result<stack::Built> {
    let settings = stack::settings(&tree.mappings, plan.owner, plan.mtime);
    // What the last push's deltas hid stays hidden (also with --full).
    let hidden = match &last {
        Loaded::Found(s) if s.settings.mappings == settings.mappings => s.hidden.clone(),
        _ => Vec::new(),
    };
    let prev = if plan.full {
        Err(Some(FullReason::Forced))
    } else {
        stack::usable(last, &settings, &base, base_name, held, plan.dest_name)
    };
    let job = stack::Job {
        roots: tree
            .mappings
            .iter()
            .map(|m| m.dest.trim_start_matches('/').to_string())
            .collect(),
        entries: tree.entries,
        scanned_at: tree.scanned_at,
        suspects: tree.suspects,
        hashed: tree.hashed,
        settings,
        hidden,
        lowers: plan.lowers.clone(),
        base,
        created_by: stack::created_by(&tree.mappings),
        mtime: plan.mtime,
        compression: plan.compression,
        squash: plan.squash,
        dir: plan.dir.to_path_buf(),
    };
    stack::layers(job, prev)
}

/// Each platform's image (its base, the app layers, its own layer), the index of them when the
/// base is one, and each image's platform for the result.
#[allow(clippy::type_complexity)]
fn images(
    bases: &[(Descriptor, Base)],
    index: Option<BaseIndex>,
    app: &[NewLayer],
    per_platform: &[per_platform::Built],
    tweaks: &Tweaks,
    mtime: u64,
) -> Result<(Vec<Image>, Option<Document>, Vec<(Platform, Digest)>)> {
    let created = image::rfc3339(mtime);
    let images = bases
        .iter()
        .enumerate()
        .map(|(i, (_, b))| {
            let mut layers = app.to_vec();
            layers.extend(per_platform.get(i).map(|b| b.made.layer.clone()));
            image::build(b, &layers, tweaks, &created)
        })
        .collect::<Result<Vec<_>>>()?;
    let Some(index) = index else {
        return Ok((images, None, Vec::new()));
    };
    let pairs: Vec<(&Descriptor, &Image)> = bases.iter().map(|(e, _)| e).zip(&images).collect();
    let doc = image::index(&index, &pairs, tweaks)?;
    let platforms = bases
        .iter()
        .zip(&images)
        .filter_map(|((_, b), i)| Some((Platform::of_config(&b.config)?, i.digest().clone())))
        .collect();
    Ok((images, Some(doc), platforms))
}

/// The blobs known to be in the destination: every layer of the last push's image, which the
/// destination holds (`last`), and the base's when the last push was on this base too.
fn present(last: Option<&State>, base: &Digest, bases: &[(Descriptor, Base)]) -> HashSet<Digest> {
    let mut present = HashSet::new();
    if let Some(s) = last {
        present.extend(s.layers().into_iter().map(|l| l.digest));
        if &s.base == base {
            for (_, b) in bases {
                present.extend(b.layers.iter().map(|l| l.digest.clone()));
            }
        }
    }
    present
}

/// The per-platform layers of this push (see [`per_platform`]).
#[allow(clippy::type_complexity)]
fn platform_layers(
    raw: &[RawMapping],
    (bases, lowers, workdir, confined): (
        &[(Descriptor, Base)],
        &[Lower],
        &str,
        Option<&std::path::Path>,
    ),
    dir: &std::path::Path,
    settings: &per_platform::Settings,
    last: Vec<crate::build::state::PlatformLayer>,
) -> Result<Vec<per_platform::Built>> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let jobs = bases
        .iter()
        .enumerate()
        .zip(lowers)
        .map(|((i, (_, b)), lower)| {
            let path = dir.join(format!("platform-{i}.tar.gz"));
            per_platform::job(raw, (b, lower), workdir, &path, confined)
        })
        .collect::<Result<Vec<_>>>()?;
    per_platform::build(jobs, settings, &last)
}

/// The delta layer's file, uncompressed; `None` when this push wrote none.
fn read_delta(file: &std::path::Path, codec: Codec) -> Result<Option<Vec<u8>>> {
    if !file.is_file() {
        return Ok(None);
    }
    let mut tar = Vec::new();
    let f = std::fs::File::open(file).map_err(|e| Error::io("read", file, &e))?;
    codec
        .reader(f)
        .and_then(|mut r| r.read_to_end(&mut tar))
        .map_err(|e| Error::io("read", file, &e))?;
    Ok(Some(tar))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::base::{check_config, image_parts};
    use crate::build::entry::{Mapping, RawMapping};
    use crate::build::state::Loaded;
    use crate::build::tree;
    use crate::oci::digest;
    use crate::oci::fixture;
    use crate::oci::manifest::{Family, Kind};
    use serde_json::{json, Value};
    use std::sync::Arc;

    const MANIFEST: &str = "docker-manifest--oras-go--f54a58bc1aac5ea1a25d796ae155dc228b3f0e11d046ae276b39c4bf2f13d8c4.json";
    const CONFIG: &str = "docker-config--oras-go--feb5d9fea6a5e9606aa995e879d862b825965ba48de054caab5ef356dc6b3412.json";

    /// A real base image (oras-go's hello-world), as `arch`.
    fn base(arch: &str) -> Base {
        let manifest: Value = serde_json::from_slice(&fixture(MANIFEST)).unwrap();
        let (_, layers) = image_parts(&manifest, "prod/hello:1").unwrap();
        let mut config = check_config(&fixture(CONFIG), 1, "prod/hello:1").unwrap();
        config["architecture"] = json!(arch);
        Base {
            name: "prod/hello:1".into(),
            digest: digest::sha256(format!("{MANIFEST}{arch}").as_bytes()),
            family: Family::Docker,
            manifest,
            config,
            layers,
        }
    }

    /// The base as an index of `archs`.
    fn bases(archs: &[&str]) -> (Vec<(Descriptor, Base)>, Option<BaseIndex>) {
        let all: Vec<(Descriptor, Base)> = archs
            .iter()
            .map(|a| {
                let b = base(a);
                let entry = json!({
                    "mediaType": crate::oci::manifest::DOCKER_MANIFEST,
                    "digest": b.digest.to_string(),
                    "size": 525,
                    "platform": {"os": "linux", "architecture": a},
                });
                (Descriptor::parse(&entry, "entry").unwrap(), b)
            })
            .collect();
        let index = (archs.len() > 1).then(|| BaseIndex {
            name: "prod/hello:1".into(),
            digest: digest::sha256(b"index"),
            family: Family::Docker,
            doc: json!({
                "schemaVersion": 2,
                "mediaType": crate::oci::manifest::DOCKER_LIST,
                "manifests": all.iter().map(|(e, _)| e.raw.clone()).collect::<Vec<_>>(),
            }),
        });
        (all, index)
    }

    fn walked(src: &std::path::Path) -> Walked {
        let mappings = vec![Mapping {
            src: src.to_path_buf(),
            dest: "/app".into(),
            into_dir: false,
        }];
        let entries = tree::collect(&mappings, None, &[], &[]).unwrap();
        Walked {
            mappings,
            entries: Arc::new(entries),
            scanned_at: crate::build::stack::now_ns(),
            suspects: Vec::new(),
            hashed: Default::default(),
            chain: Vec::new(),
        }
    }

    /// A push of `src` onto `archs`, after `last`.
    fn input(src: &std::path::Path, archs: &[&str], last: Loaded, dir: &std::path::Path) -> Input {
        let (bases, index) = bases(archs);
        Input {
            lowers: vec![Lower::default(); bases.len()],
            bases,
            index,
            held: matches!(last, Loaded::Found(_)),
            last,
            tree: walked(src),
            per_platform: Vec::new(),
            confined: None,
            workdir: "/".into(),
            owner: None,
            ignore: Vec::new(),
            own: Vec::new(),
            mtime: crate::build::tar::DEFAULT_MTIME,
            compression: Compression::Gzip,
            tweaks: Tweaks::default(),
            full: false,
            squash: Squash::default(),
            dest_name: "dev/hello:dev".into(),
            keep_delta: true,
            dir: dir.to_path_buf(),
        }
    }

    /// A tree of a few files, old enough that their stat can be trusted; `big.bin` weighs enough
    /// (64 KiB that gzip cannot shrink) that a small edit stays well under `--squash-at`.
    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..64u32 << 10)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for (name, bytes) in [("a.txt", &b"a"[..]), ("b.txt", b"b"), ("big.bin", &big)] {
            let p = t.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            crate::stale::age(&p);
        }
        t
    }

    fn manifest_of(doc: &Document) -> Value {
        serde_json::from_slice(&doc.bytes).unwrap()
    }

    #[test]
    fn a_first_push_is_the_full_layer_on_the_base_with_no_index() {
        let (src, out) = (tree(), tempfile::tempdir().unwrap());
        let (made, next) =
            make(input(src.path(), &["amd64"], Loaded::Missing, out.path())).unwrap();
        assert_eq!(
            made.mode,
            Mode::Full {
                reason: None,
                parts: 1
            }
        );
        assert!(made.index.is_none() && made.children().is_empty());
        assert_eq!(made.top(), &made.images[0].manifest);
        let m = manifest_of(made.top());
        assert_eq!(
            m["layers"].as_array().unwrap().len(),
            2,
            "base layer + app layer"
        );
        assert_eq!(
            m["layers"][1]["digest"],
            made.uploads[0].0.digest.to_string()
        );
        assert!(
            made.present.is_empty(),
            "nothing is known in a new destination"
        );
        assert!(made.save && made.delta.is_none());
        assert_eq!(&next.image, &made.top().digest);
        assert!(made.uploads[0].1.is_file(), "the layer's blob is written");
    }

    #[test]
    fn an_edit_is_a_delta_stacked_on_the_last_push_whose_blobs_are_known_present() {
        let (src, out) = (tree(), tempfile::tempdir().unwrap());
        let (first, state) =
            make(input(src.path(), &["amd64"], Loaded::Missing, out.path())).unwrap();
        std::fs::write(src.path().join("a.txt"), "edited").unwrap();
        std::fs::remove_file(src.path().join("b.txt")).unwrap();
        let out2 = tempfile::tempdir().unwrap();
        let (made, next) = make(input(
            src.path(),
            &["amd64"],
            Loaded::Found(state),
            out2.path(),
        ))
        .unwrap();
        assert_eq!(
            made.mode,
            Mode::Delta {
                changed: 1,
                deleted: 1,
                depth: 1
            }
        );
        let m = manifest_of(made.top());
        let layers: Vec<&str> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        assert_eq!(layers.len(), 3, "base, full app layer, delta");
        assert_eq!(layers[1], first.uploads[0].0.digest.to_string());
        assert_eq!(layers[2], made.uploads[0].0.digest.to_string());
        // The last image's layers and the base's are in the destination by its manifest.
        assert!(made.present.contains(&first.uploads[0].0.digest));
        assert!(made.present.contains(&first.images[0].layers[0].digest));
        // The delta holds the edit and the whiteout.
        let delta = made.delta.as_ref().unwrap();
        let names: Vec<String> = ::tar::Archive::new(&delta[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"app/.wh.b.txt".to_string()), "{names:?}");
        assert!(names.contains(&"app/a.txt".to_string()), "{names:?}");
        assert_eq!(next.deltas.len(), 1);
    }

    #[test]
    fn a_zstd_delta_stacks_on_a_gzip_layer_and_is_read_back_for_sync() {
        let oci = |mut i: Input| {
            for (_, b) in &mut i.bases {
                b.family = Family::Oci;
            }
            i
        };
        let (src, out) = (tree(), tempfile::tempdir().unwrap());
        let (first, state) = make(oci(input(
            src.path(),
            &["amd64"],
            Loaded::Missing,
            out.path(),
        )))
        .unwrap();
        std::fs::write(src.path().join("a.txt"), "edited").unwrap();
        let out2 = tempfile::tempdir().unwrap();
        let mut zstd = oci(input(
            src.path(),
            &["amd64"],
            Loaded::Found(state),
            out2.path(),
        ));
        zstd.compression = Compression::Zstd(3);
        let (made, next) = make(zstd).unwrap();
        let m = manifest_of(made.top());
        let types: Vec<&str> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["mediaType"].as_str().unwrap())
            .collect();
        assert_eq!(
            types[1..],
            [
                crate::oci::manifest::OCI_LAYER_GZIP,
                crate::build::compression::OCI_LAYER_ZSTD
            ]
        );
        assert_eq!(first.uploads[0].0.codec, Codec::Gzip);
        assert_eq!(next.deltas[0].codec, Codec::Zstd);
        let delta = made.delta.as_ref().unwrap();
        let names: Vec<String> = ::tar::Archive::new(&delta[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["app/a.txt"]);
        // On a Docker schema 2 base there is no zstd layer type.
        let mut docker = input(src.path(), &["amd64"], Loaded::Missing, out2.path());
        docker.compression = Compression::Zstd(3);
        let e = make(docker).err().unwrap();
        assert_eq!(e.code(), crate::error::ExitCode::Usage);
    }

    #[test]
    fn nothing_changed_is_the_same_image_and_no_state_to_write() {
        let (src, out) = (tree(), tempfile::tempdir().unwrap());
        let (first, state) =
            make(input(src.path(), &["amd64"], Loaded::Missing, out.path())).unwrap();
        let (made, _) = make(input(
            src.path(),
            &["amd64"],
            Loaded::Found(state),
            out.path(),
        ))
        .unwrap();
        assert_eq!(made.mode, Mode::Unchanged);
        assert_eq!(made.top(), first.top());
        assert!(made.uploads.is_empty() && !made.save);
        assert_eq!(made.delta.as_deref(), Some(&[][..]));
    }

    #[test]
    fn past_max_deltas_the_push_is_squashed_into_the_full_layer() {
        let (src, out) = (tree(), tempfile::tempdir().unwrap());
        let (_, state) = make(input(src.path(), &["amd64"], Loaded::Missing, out.path())).unwrap();
        std::fs::write(src.path().join("a.txt"), "edited").unwrap();
        let mut i = input(src.path(), &["amd64"], Loaded::Found(state), out.path());
        i.squash.max_deltas = 0;
        let (made, next) = make(i).unwrap();
        assert_eq!(
            made.mode,
            Mode::Full {
                reason: Some(FullReason::MaxDeltas { stacked: 0, max: 0 }),
                parts: 1
            }
        );
        assert_eq!(
            manifest_of(made.top())["layers"].as_array().unwrap().len(),
            2
        );
        assert!(next.deltas.is_empty());
        // What changed is still told (live update syncs it).
        assert!(made.delta.as_ref().is_some_and(|d| !d.is_empty()));
    }

    #[test]
    fn several_platforms_give_an_image_each_and_an_index_of_them_with_the_same_app_layer() {
        let (src, out) = (tree(), tempfile::tempdir().unwrap());
        let (made, next) = make(input(
            src.path(),
            &["amd64", "arm64"],
            Loaded::Missing,
            out.path(),
        ))
        .unwrap();
        assert_eq!(made.images.len(), 2);
        let index = made.index.as_ref().expect("an index");
        assert_eq!(made.top(), index);
        let (kind, doc) = index.classify("index").unwrap();
        assert_eq!(kind, Kind::Index(Family::Docker));
        let entries = doc["manifests"].as_array().unwrap();
        for (e, image) in entries.iter().zip(&made.images) {
            assert_eq!(e["digest"], image.digest().to_string());
            assert_eq!(e["size"], image.manifest.bytes.len());
        }
        assert_eq!(entries[1]["platform"]["architecture"], "arm64");
        let app = |i: &Image| i.layers.last().unwrap().digest.clone();
        assert_eq!(app(&made.images[0]), app(&made.images[1]));
        assert_eq!(made.children().len(), 2);
        assert_eq!(made.platforms.len(), 2);
        assert_eq!(next.image, index.digest);
    }

    #[test]
    fn per_platform_files_give_each_platform_its_own_layer_above_the_shared_one() {
        let (src, out) = (tree(), tempfile::tempdir().unwrap());
        let bins = tempfile::tempdir().unwrap();
        for arch in ["amd64", "arm64"] {
            std::fs::create_dir_all(bins.path().join(arch)).unwrap();
            std::fs::write(bins.path().join(arch).join("app"), arch).unwrap();
        }
        let mut i = input(src.path(), &["amd64", "arm64"], Loaded::Missing, out.path());
        i.per_platform = vec![RawMapping {
            src: bins.path().join("{arch}/app"),
            dest: Some("/bin/app".into()),
        }];
        let (made, _) = make(i).unwrap();
        assert_eq!(made.per_platform.len(), 2);
        let own = |n: usize| made.images[n].layers.last().unwrap().digest.clone();
        assert_ne!(own(0), own(1), "each platform's binary in its own layer");
        assert_eq!(own(0), made.per_platform[0].made.layer.digest);
        let shared = |n: usize| made.images[n].layers[1].digest.clone();
        assert_eq!(shared(0), shared(1));
        assert!(made.platform_files_changed);
    }
}
