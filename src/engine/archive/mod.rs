//! The volsnap archive format (SPEC section 3): a tar stream, gzip- or
//! zstd-compressed, whose first entry is `volsnap.json` and whose data lives
//! under `volumes/<index>/`. Plain GNU tar can always read it.

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

/// Suffix of an archive being written. Such files are never visible under a
/// final name and are removed by the start-up sweep.
pub const TEMP_SUFFIX: &str = ".partial";

/// Suffix of the checksum file written next to each archive, in the format of
/// `sha256sum` (so `sha256sum -c` works without volsnap).
pub const CHECKSUM_SUFFIX: &str = ".sha256";

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
