//! Creating and vetting the lock directory.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use distlock_core::Result;

use crate::error::dir_error;
use crate::sys;

/// How strictly the directory is vetted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    /// A directory the caller named: it must be a real, writable directory (not a symlink).
    Named,
    /// The default directory in a shared place such as `/tmp`: it must also belong to us and
    /// be writable by nobody else, or another user could have planted it to read or steal our
    /// locks.
    Private,
}

/// Makes `dir` absolute, creates it (mode 0700, parents with default permissions) if missing,
/// and checks it.
pub(crate) fn prepare(dir: &Path, trust: Trust) -> Result<PathBuf> {
    let dir = std::path::absolute(dir)
        .map_err(|e| dir_error(dir, "cannot make the path absolute", Some(e)))?;
    let meta = match std::fs::symlink_metadata(&dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create(&dir)?;
            std::fs::symlink_metadata(&dir)
                .map_err(|e| dir_error(&dir, "cannot stat the new directory", Some(e)))?
        }
        Err(e) => return Err(dir_error(&dir, "cannot stat it", Some(e))),
    };
    if meta.file_type().is_symlink() {
        return Err(dir_error(
            &dir,
            "is a symbolic link; refusing to use it (name the real directory instead)",
            None,
        ));
    }
    if !meta.is_dir() {
        return Err(dir_error(&dir, "exists and is not a directory", None));
    }
    if trust == Trust::Private {
        if meta.uid() != sys::euid() {
            return Err(dir_error(
                &dir,
                &format!(
                    "belongs to uid {}, not to this user (uid {}); someone may have created it to \
                     interfere with our locks. Remove it, or set XDG_RUNTIME_DIR or a file:// URL",
                    meta.uid(),
                    sys::euid()
                ),
                None,
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(dir_error(
                &dir,
                &format!(
                    "is writable by group or others (mode {:o}); run chmod 700 on it",
                    meta.mode() & 0o7777
                ),
                None,
            ));
        }
    }
    sys::check_writable_dir(&dir)
        .map_err(|e| dir_error(&dir, "is not writable by this process", Some(e)))?;
    warn_about_file_system(&dir);
    Ok(dir)
}

fn create(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| dir_error(dir, "cannot create its parent directories", Some(e)))?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        // Another process created it first; it is vetted like any existing directory.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(dir_error(dir, "cannot create it", Some(e))),
    }
}

fn warn_about_file_system(dir: &Path) {
    match sys::fs_type(dir) {
        Ok(sys::NFS_SUPER_MAGIC) => tracing::warn!(
            dir = %dir.display(),
            "distlock lock directory is on NFS: locks go through the NFS lock manager and hold \
             only while client and server agree; see docs/file-backend.md"
        ),
        Ok(kind) if sys::SMB_MAGICS.contains(&kind) => tracing::warn!(
            dir = %dir.display(),
            "distlock lock directory is on SMB/CIFS: byte-range locks there are not tested; \
             see docs/file-backend.md"
        ),
        Ok(_) => {}
        Err(error) => {
            tracing::debug!(dir = %dir.display(), %error, "statfs of the lock directory failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_private_directory_is_created_0700_and_accepted() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("distlock-test");
        let prepared = prepare(&dir, Trust::Private).unwrap();
        assert_eq!(prepared, dir);
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        prepare(&dir, Trust::Private).unwrap();
    }

    #[test]
    fn a_shared_writable_default_directory_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("planted");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = prepare(&dir, Trust::Private).unwrap_err();
        assert_eq!(err.kind(), distlock_core::ErrorKind::Backend);
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        // A directory the caller names explicitly may be shared on purpose.
        prepare(&dir, Trust::Named).unwrap();
    }

    #[test]
    fn a_default_directory_owned_by_someone_else_is_refused() {
        if sys::euid() != 0 {
            // Only root can give a directory away; the mode and symlink cases still run.
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("planted");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&dir, Some(4242), Some(4242)).unwrap();
        let err = prepare(&dir, Trust::Private).unwrap_err();
        assert!(err.to_string().contains("belongs to uid 4242"), "{err}");
    }

    #[test]
    fn a_symlinked_default_directory_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let real = base.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = prepare(&link, Trust::Private).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn relative_paths_become_absolute() {
        let base = tempfile::tempdir().unwrap();
        let relative = base
            .path()
            .join("rel")
            .strip_prefix("/")
            .unwrap()
            .to_owned();
        // Relative to the root directory, which is where the tempdir lives.
        let prepared = prepare(&Path::new("/").join(&relative), Trust::Named).unwrap();
        assert!(prepared.is_absolute());
    }
}
