//! Extended attributes: which names volsnap keeps, reading them from an open
//! descriptor, and writing them back through one.
//!
//! Everything goes through descriptors (`flistxattr`, `fgetxattr`,
//! `fsetxattr`): the capture already holds each file and directory open
//! with `O_NOFOLLOW`, and the extractor holds what it created, so no path is
//! resolved again and no symlink can redirect the call.
//!
//! Symlinks are not opened, so their attributes are neither captured nor
//! restored. Linux allows no `user.*` attribute on a symlink; what a symlink
//! can carry is `security.*` (an SELinux label, which the restoring host's
//! policy assigns) and `trusted.*`.

use std::io;
use std::os::fd::AsFd;

use rustix::fs::XattrFlags;

/// Longest attribute name Linux accepts (`XATTR_NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Largest attribute value Linux accepts (`XATTR_SIZE_MAX`).
pub const MAX_VALUE: usize = 64 * 1024;
/// Most attributes kept per entry.
pub const MAX_PER_ENTRY: usize = 1024;
/// Most bytes (names and values) kept per entry: the pax header that holds
/// them must stay well under the reader's 1 MiB extended-header cap.
pub const MAX_BYTES_PER_ENTRY: usize = 256 * 1024;

/// POSIX ACL of a file or directory, stored by the kernel as an attribute.
pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
/// Default POSIX ACL of a directory (inherited by what is created in it).
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";
/// File capabilities.
pub const CAPABILITY: &[u8] = b"security.capability";

/// One extended attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xattr {
    /// Full name, namespace included (`user.mime_type`).
    pub name: Vec<u8>,
    /// Value, raw bytes.
    pub value: Vec<u8>,
}

/// The namespace of an attribute name, which decides who may set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// `user.*`: anyone who may write the file.
    User,
    /// `system.posix_acl_access` / `system.posix_acl_default`: the owner.
    Acl,
    /// `trusted.*`: `CAP_SYS_ADMIN`.
    Trusted,
    /// `security.*` (capabilities, SELinux labels, IMA): privileged.
    Security,
}

impl Namespace {
    /// Whether setting it needs privileges an unprivileged volsnap lacks.
    pub fn privileged(self) -> bool {
        matches!(self, Namespace::Trusted | Namespace::Security)
    }
}

/// Checks an attribute name and returns its namespace.
///
/// # Security
///
/// Names come from untrusted archives: this is the whole list of what may be
/// handed to `fsetxattr`. Accepted: `user.*`, `trusted.*`, `security.*`
/// (something after the dot, at most [`MAX_NAME`] bytes, no NUL) and the two
/// POSIX ACL names. Every other `system.*` name (file-system specific, such
/// as NFSv4 ACLs) and every other namespace is refused.
pub fn check_name(name: &[u8]) -> Result<Namespace, String> {
    let shown = String::from_utf8_lossy(name);
    if name.len() > MAX_NAME {
        return Err(format!("extended attribute name of {} bytes (the limit is {MAX_NAME})", name.len()));
    }
    if name.contains(&0) {
        return Err(format!("extended attribute name {shown:?} contains a NUL byte"));
    }
    if name == ACL_ACCESS || name == ACL_DEFAULT {
        return Ok(Namespace::Acl);
    }
    for (prefix, ns) in
        [(&b"user."[..], Namespace::User), (b"trusted.", Namespace::Trusted), (b"security.", Namespace::Security)]
    {
        if let Some(rest) = name.strip_prefix(prefix) {
            if rest.is_empty() {
                return Err(format!("extended attribute name {shown:?} is only a namespace"));
            }
            return Ok(ns);
        }
    }
    Err(format!(
        "extended attribute {shown:?} is outside the namespaces volsnap keeps (user.*, trusted.*, security.*, POSIX ACLs)"
    ))
}

/// An attribute the capture could not keep, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotKept {
    /// Name (lossy UTF-8).
    pub name: String,
    /// Why.
    pub why: String,
}

/// Reads the attributes of open files, reusing its buffers: the common case,
/// a file without attributes, costs one `flistxattr` and no allocation.
#[derive(Default)]
pub struct Reader {
    names: Vec<u8>,
    value: Vec<u8>,
}

impl Reader {
    /// The attributes of `fd` that volsnap keeps, sorted by name, and those
    /// it had to leave out. A file system without extended attributes has
    /// none. Attributes removed between listing and reading are skipped.
    pub fn read(&mut self, fd: impl AsFd) -> io::Result<(Vec<Xattr>, Vec<NotKept>)> {
        let fd = fd.as_fd();
        let listed = loop {
            if self.names.is_empty() {
                self.names.resize(1024, 0);
            }
            match rustix::fs::flistxattr(fd, &mut self.names[..]) {
                Ok(n) => break n,
                // The list of names is at most 64 KiB (XATTR_LIST_MAX).
                Err(rustix::io::Errno::RANGE) if self.names.len() < MAX_VALUE => {
                    self.names.resize(MAX_VALUE, 0);
                }
                Err(rustix::io::Errno::NOTSUP) => return Ok((Vec::new(), Vec::new())),
                Err(e) => return Err(e.into()),
            }
        };
        let mut kept = Vec::new();
        let mut not_kept = Vec::new();
        let mut bytes = 0usize;
        let names = std::mem::take(&mut self.names);
        for name in names[..listed].split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let shown = String::from_utf8_lossy(name).into_owned();
            if let Err(why) = check_name(name) {
                not_kept.push(NotKept { name: shown, why });
                continue;
            }
            let value = match self.value_of(fd, name) {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    not_kept.push(NotKept { name: shown, why: format!("cannot be read: {e}") });
                    continue;
                }
            };
            if kept.len() == MAX_PER_ENTRY || bytes + name.len() + value.len() > MAX_BYTES_PER_ENTRY {
                not_kept.push(NotKept {
                    name: shown,
                    why: format!(
                        "more than {MAX_PER_ENTRY} extended attributes or {MAX_BYTES_PER_ENTRY} bytes of them on one file"
                    ),
                });
                continue;
            }
            bytes += name.len() + value.len();
            kept.push(Xattr { name: name.to_vec(), value });
        }
        self.names = names;
        kept.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((kept, not_kept))
    }

    /// One value; `None` when the attribute vanished meanwhile.
    fn value_of(&mut self, fd: std::os::fd::BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let cname = std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        loop {
            if self.value.is_empty() {
                self.value.resize(4096, 0);
            }
            match rustix::fs::fgetxattr(fd, cname.as_c_str(), &mut self.value[..]) {
                Ok(n) => return Ok(Some(self.value[..n].to_vec())),
                Err(rustix::io::Errno::NODATA) => return Ok(None),
                Err(rustix::io::Errno::RANGE) if self.value.len() < MAX_VALUE => {
                    self.value.resize(MAX_VALUE, 0);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Sets one attribute on an open file or directory.
pub fn set(fd: impl AsFd, x: &Xattr) -> io::Result<()> {
    let name = std::ffi::CString::new(x.name.as_slice()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    rustix::fs::fsetxattr(fd, name.as_c_str(), &x.value, XattrFlags::empty()).map_err(io::Error::from)
}

/// Whether an error from [`set`] means "this attribute cannot be kept here"
/// (not permitted, not supported by the file system, too large for it)
/// rather than a failure of the extraction itself.
pub fn is_not_settable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::EACCES | libc::EOPNOTSUPP | libc::E2BIG | libc::ERANGE | libc::EINVAL | libc::ENOSPC)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_volsnap_keeps() {
        assert_eq!(check_name(b"user.a"), Ok(Namespace::User));
        assert_eq!(check_name(b"trusted.overlay.opaque"), Ok(Namespace::Trusted));
        assert_eq!(check_name(b"security.capability"), Ok(Namespace::Security));
        assert_eq!(check_name(ACL_ACCESS), Ok(Namespace::Acl));
        assert_eq!(check_name(ACL_DEFAULT), Ok(Namespace::Acl));
        for bad in [&b"user."[..], b"", b"system.nfs4_acl", b"com.apple.quarantine", b"user.a\0b", b"osx.x"] {
            assert!(check_name(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut long = b"user.".to_vec();
        long.resize(MAX_NAME, b'a');
        assert!(check_name(&long).is_ok());
        long.push(b'a');
        assert!(check_name(&long).unwrap_err().contains("256 bytes"));
    }

    #[test]
    fn read_and_set_through_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("f")).unwrap();
        let mut r = Reader::default();
        assert_eq!(r.read(&f).unwrap(), (Vec::new(), Vec::new()));
        let big = Xattr { name: b"user.big".to_vec(), value: vec![7u8; 10_000] };
        let small = Xattr { name: b"user.a".to_vec(), value: b"\n\0bin".to_vec() };
        if let Err(e) = set(&f, &big) {
            assert!(is_not_settable(&e), "{e}");
            eprintln!("skipped: no user xattrs here ({e})");
            return;
        }
        set(&f, &small).unwrap();
        let (kept, not_kept) = r.read(&f).unwrap();
        assert_eq!(kept, vec![small, big]);
        assert!(not_kept.is_empty());
    }
}
