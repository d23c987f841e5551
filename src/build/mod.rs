//! Building the new image, with no network of its own: source trees → entries (walk, tree,
//! ignore) → tar → gzip or zstd (compression), in parts (partition) or as a delta on the last
//! push (index, state, stack); files per platform (per_platform); the base as read from a
//! store; the new config and manifest (image).

pub mod base;
pub mod compression;
pub mod entry;
pub mod gzip;
pub mod ignore;
pub mod image;
pub mod index;
pub mod lower;
pub mod new_image;
pub mod partition;
pub mod per_platform;
pub mod stack;
pub mod state;
pub mod tar;
pub mod tree;
pub mod walk;
