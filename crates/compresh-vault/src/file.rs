//! Key files on disk: load, atomic private save, and first-start creation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::{KeyRing, MasterSecret, VaultError};

/// Written above the keys by [`KeyRing::save_file`]; comments are ignored when parsing.
const FILE_HEADER: &str = "\
# Compresh master key ring: one `v<N>:<base64url secret>` line per version; the highest
# version encrypts, older ones only decrypt. Keep this file secret (mode 0600) and back it up:
# without it, the stored provider keys cannot be decrypted.
";

/// How many random temporary names to try before giving up.
const TEMP_ATTEMPTS: usize = 8;

impl KeyRing {
    /// Load from a file; the error names the path and problem (missing, unreadable, malformed,
    /// too short).
    ///
    /// # Errors
    ///
    /// [`VaultError::Io`] if the file cannot be read (missing, permission denied, ...);
    /// [`VaultError::KeyFile`] wrapping the [`KeyRing::parse`] error (or
    /// [`VaultError::NotUtf8`]) if its content is unusable.
    pub fn load_file(path: &Path) -> Result<KeyRing, VaultError> {
        let bytes = read_secret_file(path)?;
        parse_file_bytes(path, &bytes)
    }

    /// Write atomically (temp file in same dir + rename), mode 0600 on unix, never
    /// world-readable even briefly (create the temp file with 0600).
    ///
    /// Replaces an existing file. The file starts with a comment header, then
    /// [`KeyRing::to_text`].
    ///
    /// # Errors
    ///
    /// [`VaultError::Io`] naming the file that could not be created, written or renamed (e.g. the
    /// directory does not exist or is not writable). No temporary file is left behind on error.
    pub fn save_file(&self, path: &Path) -> Result<(), VaultError> {
        let temp = write_temp_file(path, &self.file_contents())?;
        if let Err(source) = fs::rename(&temp, path) {
            // Best effort: the temporary file holds secrets, but it is 0600 like the key file.
            let _ = fs::remove_file(&temp);
            return Err(io_error(path, source));
        }
        sync_parent_dir(path);
        Ok(())
    }

    /// Load if the file exists, else generate version 1, save it, and return (ring, created=true).
    ///
    /// An existing file is never replaced, even if it is malformed (that is an error) or if
    /// another process creates it at the same moment (its ring is loaded and returned with
    /// `created == false`): the new file is published with a hard link, which fails if the name
    /// is taken. On filesystems without hard links it falls back to a rename.
    ///
    /// # Errors
    ///
    /// As [`KeyRing::load_file`] for an existing file, as [`KeyRing::save_file`] for a new one.
    pub fn load_or_create_file(path: &Path) -> Result<(KeyRing, bool), VaultError> {
        match fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                return Ok((parse_file_bytes(path, &bytes)?, false));
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_error(path, source)),
        }

        let ring = KeyRing::new(1, MasterSecret::generate());
        let temp = write_temp_file(path, &ring.file_contents())?;
        let published = match fs::hard_link(&temp, path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            // No hard links here (FAT, some network mounts): a rename could only replace a file
            // created since the read above.
            Err(_) => fs::rename(&temp, path).map(|()| true),
        };
        // Gone already after a rename; otherwise best effort (0600, like the key file itself).
        let _ = fs::remove_file(&temp);
        match published {
            Ok(true) => {
                sync_parent_dir(path);
                Ok((ring, true))
            }
            // Another process created the file first: use its keys, not ours.
            Ok(false) => Ok((KeyRing::load_file(path)?, false)),
            Err(source) => Err(io_error(path, source)),
        }
    }

    fn file_contents(&self) -> Zeroizing<String> {
        let text = self.to_text();
        let mut contents = Zeroizing::new(String::with_capacity(FILE_HEADER.len() + text.len()));
        contents.push_str(FILE_HEADER);
        contents.push_str(&text);
        contents
    }
}

fn io_error(path: &Path, source: io::Error) -> VaultError {
    VaultError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    // `fs::read` sizes its buffer from the file's metadata, so it does not reallocate (and leave
    // copies of the secret behind) for a regular file.
    fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| io_error(path, source))
}

fn parse_file_bytes(path: &Path, bytes: &[u8]) -> Result<KeyRing, VaultError> {
    let wrap = |err| VaultError::KeyFile {
        path: path.to_owned(),
        source: Box::new(err),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| wrap(VaultError::NotUtf8))?;
    KeyRing::parse(text).map_err(wrap)
}

/// Directory holding `path` ("." for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Creates a new private file next to `path`, writes and syncs `contents`, returns its path.
fn write_temp_file(path: &Path, contents: &str) -> Result<PathBuf, VaultError> {
    let Some(file_name) = path.file_name() else {
        return Err(io_error(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
        ));
    };
    let dir = parent_dir(path);
    let mut last_error = None;
    for _ in 0..TEMP_ATTEMPTS {
        let temp = dir.join(format!(
            ".{}.tmp-{}-{:016x}",
            file_name.to_string_lossy(),
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut file = match create_private(&temp) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                last_error = Some(err);
                continue;
            }
            Err(source) => return Err(io_error(&temp, source)),
        };
        let written = file
            .write_all(contents.as_bytes())
            .and_then(|()| file.sync_all());
        drop(file);
        return match written {
            Ok(()) => Ok(temp),
            Err(source) => {
                let _ = fs::remove_file(&temp);
                Err(io_error(&temp, source))
            }
        };
    }
    Err(io_error(
        path,
        last_error.unwrap_or_else(|| io::Error::other("no temporary file name available")),
    ))
}

/// `create_new` with mode 0600 from the start (before any byte is written), on unix.
fn create_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

/// Makes a rename or link durable. Best effort: some filesystems cannot sync a directory, and
/// the key file itself is already complete and synced.
fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    {
        if let Ok(dir) = File::open(parent_dir(path)) {
            let _ = dir.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn load_or_create_creates_a_private_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let (ring, created) = KeyRing::load_or_create_file(&path).unwrap();
        assert!(created);
        assert_eq!(ring.versions(), [1]);
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        assert_eq!(dir_entries(dir.path()), ["master.key"], "no temp file left");

        let (again, created) = KeyRing::load_or_create_file(&path).unwrap();
        assert!(!created);
        assert_eq!(*again.to_text(), *ring.to_text());
        let sealed = ring.seal(&crate::ProviderSecret::new("sk-0123456789ab".to_owned()));
        assert_eq!(
            again.open(&sealed.unwrap()).unwrap().expose_secret(),
            "sk-0123456789ab"
        );
    }

    #[test]
    fn load_or_create_never_replaces_a_malformed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        fs::write(&path, "v1:garbage!!\n").unwrap();
        let err = KeyRing::load_or_create_file(&path).unwrap_err();
        assert!(matches!(err, VaultError::KeyFile { .. }), "{err:?}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "v1:garbage!!\n");
    }

    #[test]
    fn save_then_load_round_trips_and_replaces_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        fs::write(&path, "old content").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        }
        let mut ring = KeyRing::new(1, MasterSecret::generate());
        ring.rotate();
        ring.save_file(&path).unwrap();
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        assert_eq!(dir_entries(dir.path()), ["keys"]);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Compresh master key ring"));
        let loaded = KeyRing::load_file(&path).unwrap();
        assert_eq!(loaded.versions(), [1, 2]);
        assert_eq!(*loaded.to_text(), *ring.to_text());
    }

    #[test]
    fn load_errors_name_the_path_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.key");
        let err = KeyRing::load_file(&missing).unwrap_err();
        assert!(matches!(err, VaultError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.key"), "{err}");

        let malformed = dir.path().join("malformed.key");
        fs::write(&malformed, "# keys\nv1:%%%%\n").unwrap();
        let err = KeyRing::load_file(&malformed).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("malformed.key"), "{message}");
        assert!(message.contains("line 2"), "{message}");
        match err {
            VaultError::KeyFile { source, .. } => assert!(matches!(
                *source,
                VaultError::MalformedKeyFile { line: 2, .. }
            )),
            other => panic!("unexpected {other:?}"),
        }

        let short = dir.path().join("short.key");
        let short_secret = "AAECAwQFBgcICQoLDA0ODw"; // 16 bytes
        fs::write(&short, format!("v1:{short_secret}\n")).unwrap();
        let err = KeyRing::load_file(&short).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("short.key") && message.contains("32"),
            "{message}"
        );
        assert!(!message.contains(short_secret) && !format!("{err:?}").contains(short_secret));

        let binary = dir.path().join("binary.key");
        fs::write(&binary, [0xff, 0xfe, b'\n']).unwrap();
        let err = KeyRing::load_file(&binary).unwrap_err();
        assert!(err.to_string().contains("binary.key"), "{err}");
        assert!(
            matches!(err, VaultError::KeyFile { source, .. } if matches!(*source, VaultError::NotUtf8))
        );
    }

    #[test]
    fn save_into_a_missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("master.key");
        let ring = KeyRing::new(1, MasterSecret::generate());
        let err = ring.save_file(&path).unwrap_err();
        assert!(matches!(err, VaultError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-dir"), "{err}");
        assert!(matches!(
            KeyRing::load_or_create_file(&path),
            Err(VaultError::Io { .. })
        ));
    }
}
