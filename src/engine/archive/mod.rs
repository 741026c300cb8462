//! The volsnap archive format (SPEC section 3): a tar stream, gzip- or
//! zstd-compressed, whose first entry is `volsnap.json` and whose data lives
//! under `volumes/<index>/`. Plain GNU tar can always read it.

pub mod compress;
mod manifest;
pub mod pax;
pub mod reader;
pub mod writer;

pub use manifest::{ArchiveManifest, FORMAT_VERSION, MANIFEST_ENTRY, ManifestVolume, SnapshotRef};
pub use reader::{
    ArchiveError, EntryInfo, EntryKind, VerifyLimits, VerifyReport, VolumeReport, list, normalize_entry_name, verify,
};
pub use writer::{ArchiveWriter, EntryMeta, HashingWriter};

use crate::api::Compression;

/// Prefix of every volume's entries: `volumes/<index>/...`.
pub const VOLUMES_DIR: &str = "volumes";

/// The archives directory's file names are the store's (it sweeps them).
pub use crate::store::{CHECKSUM_SUFFIX, TEMP_SUFFIX};

/// Detects the compression of an archive from its first bytes.
pub fn detect_compression(magic: &[u8]) -> Option<Compression> {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else {
        None
    }
}
