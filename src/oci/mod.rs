//! Basic types, pure and at the bottom: references, digests, media types and descriptors,
//! platforms, and blob bytes on the move.

pub mod digest;
pub mod manifest;
pub mod platform;
pub mod reference;
pub mod stream;
