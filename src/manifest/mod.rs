//! Manifests are untrusted input: whoever can write one is not trusted with
//! the host. Shared by files mode's manifests directory and by commands that
//! read a manifest file.
//!
//! - [`yaml`]: YAML parsed with bounded work (nesting, documents,
//!   duplicate keys).
//! - [`read`]: a manifest file read without blocking and within a size cap.
//! - [`decode`]: a file's documents into declared objects, invalid objects
//!   (with the field) and problems, and whether the file is complete enough
//!   for its missing declarations to count as deletions.
//! - [`dir`]: a directory of manifests, scanned with a cache, and the
//!   evidence that a declaration is gone (deleting needs it).

pub mod decode;
pub mod dir;
pub mod read;
pub mod yaml;

pub use decode::{Declaration, Decoded, decode};
pub use read::{MAX_MANIFEST_FILE_BYTES, ReadError, read_regular, stat_regular};
