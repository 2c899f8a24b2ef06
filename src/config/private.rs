//! Private files: the password files, the pseudonymisation key, the TLS client keys. One reader,
//! [`read_private_file`], checks each on the descriptor it then reads from: no check of a name
//! that another file could take the place of before it is opened.

use std::path::Path;

use zeroize::Zeroizing;

use super::secret::Secret;

/// The largest secret file read (a password, a key).
pub const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// Reads a private file: a password file, the pseudonymisation key, a TLS private key. Every
/// check is made on the opened descriptor, never on the name before opening it, so nothing can be
/// swapped in between:
/// - the name is opened without following a final symbolic link (a link planted beside it cannot
///   make the daemon read another of its secrets, say the pseudonymisation key sent to a server as
///   a password) and without blocking (a FIFO put in its place cannot hang the start);
/// - the open file must be a regular file, owned by the daemon's effective user, that group and
///   others can neither read nor write (mode 0400 or 0600), of at most `max_bytes`;
/// - it is then read from that same descriptor. The bytes are wiped from memory when dropped.
///
/// Errors name the file, not the setting: the caller says which setting it is.
pub fn read_private_file(path: &Path, max_bytes: u64) -> Result<Zeroizing<Vec<u8>>, String> {
    use rustix::fs::{Mode, OFlags};
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| {
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if e == rustix::io::Errno::LOOP && is_link {
            format!(
                "{shown} is a symbolic link; name the file itself (a private file is never read \
                 through a link)"
            )
        } else {
            format!("{shown}: {}", std::io::Error::from(e))
        }
    })?;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{shown} is owned by uid {}, not by the daemon's user (uid {me}): chown {me} {shown}",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} can be read or written by group or others (mode {mode:03o}); make it \
             readable by the daemon's user alone: chmod 0400 {shown}"
        ));
    }
    if meta.len() > max_bytes {
        return Err(format!("{shown} is larger than {max_bytes} bytes"));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    (&file)
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{shown}: {e}"))?;
    // It grew after the fstat.
    if bytes.len() as u64 > max_bytes {
        return Err(format!("{shown} is larger than {max_bytes} bytes"));
    }
    Ok(bytes)
}

/// Reads a password from a private file (see [`read_private_file`]: mode 0400 or 0600, owned by
/// the daemon's user, at most [`MAX_SECRET_FILE_BYTES`]), as UTF-8 text. A trailing line break
/// is not part of the secret.
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let bytes = read_private_file(path, MAX_SECRET_FILE_BYTES)?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn only_a_file_its_owner_alone_can_read_is_read() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o400, 0o600] {
            let path = file(dir.path(), "ok", b"hunter2\n", mode);
            assert_eq!(read_secret_file(&path).unwrap().expose(), "hunter2");
        }
        for mode in [0o640, 0o440, 0o604, 0o620, 0o644, 0o602] {
            let path = file(dir.path(), "loose", b"hunter2", mode);
            let e = read_private_file(&path, 64).unwrap_err();
            assert!(
                e.contains(&format!("mode {mode:03o}")) && !e.contains("hunter2"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_symbolic_link_is_refused_even_to_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = file(dir.path(), "key", b"secret", 0o400);
        let link = dir.path().join("password");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = read_secret_file(&link).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        // A link in a directory above the file is followed: only the file's own name is not.
        let above = dir.path().join("above");
        std::os::unix::fs::symlink(dir.path(), &above).unwrap();
        assert_eq!(
            read_secret_file(&above.join("key")).unwrap().expose(),
            "secret"
        );
    }

    #[test]
    fn a_fifo_or_a_directory_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Opened without O_NONBLOCK this would wait for a writer for ever.
        let e = read_private_file(&fifo, 64).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = read_private_file(&sub, 64).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_file_of_another_user_is_refused() {
        // The daemon's user owns its private files. As root (CI) the file can be given away and
        // still be opened; as another user chown is refused and this case cannot be made.
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), "theirs", b"secret", 0o600);
        if std::os::unix::fs::chown(&path, Some(4242), None).is_err() {
            eprintln!("not root: the owner check is not exercised here");
            return;
        }
        let e = read_private_file(&path, 64).unwrap_err();
        assert!(e.contains("owned by uid 4242"), "{e}");
    }

    #[test]
    fn a_file_over_the_limit_is_refused_and_text_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let big = file(dir.path(), "big", &[b'x'; 65], 0o400);
        assert!(
            read_private_file(&big, 64)
                .unwrap_err()
                .contains("larger than 64 bytes")
        );
        assert_eq!(read_private_file(&big, 65).unwrap().len(), 65);
        let binary = file(dir.path(), "bin", &[0xff, 0xfe], 0o400);
        assert!(read_secret_file(&binary).unwrap_err().contains("not UTF-8"));
    }
}
