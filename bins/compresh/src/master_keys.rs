//! Where the master key ring comes from, and re-reading it when another process rotated it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use compresh_vault::{KeyRing, ProviderSecret, Sealed, VaultError};

/// The file name of the key ring inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// Where the ring was loaded from: rotation and reload only work for a file.
#[derive(Debug, Clone)]
pub enum MasterKeySource {
    /// `COMPRESH_MASTER_KEY`: fixed for the life of the process.
    Environment,
    /// A key file (created with mode 0600 on first use).
    File(PathBuf),
}

/// The process's master key ring, shared by every request.
#[derive(Debug)]
pub struct MasterKeys {
    source: MasterKeySource,
    ring: RwLock<Arc<KeyRing>>,
}

impl MasterKeys {
    /// Load from `env_value` when given, else from (or newly into) `data_dir/master.key`.
    /// Returns whether a new key file was created.
    ///
    /// # Errors
    /// A malformed or too-short secret, or an unreadable key file.
    pub fn load(data_dir: &Path, env_value: Option<&str>) -> Result<(Self, bool), VaultError> {
        let (source, ring, created) = match env_value {
            Some(text) => (MasterKeySource::Environment, KeyRing::parse(text)?, false),
            None => {
                let path = data_dir.join(MASTER_KEY_FILE);
                let (ring, created) = KeyRing::load_or_create_file(&path)?;
                (MasterKeySource::File(path), ring, created)
            }
        };
        let keys = Self {
            source,
            ring: RwLock::new(Arc::new(ring)),
        };
        Ok((keys, created))
    }

    /// Where the ring came from.
    pub fn source(&self) -> &MasterKeySource {
        &self.source
    }

    /// The current ring.
    pub fn ring(&self) -> Arc<KeyRing> {
        Arc::clone(
            &self
                .ring
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Replace the ring (after this process rotated it).
    pub fn replace(&self, ring: KeyRing) {
        *self
            .ring
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(ring);
    }

    /// Decrypt, re-reading the key file once if the ciphertext names a version this process does
    /// not hold yet: another process (`compresh master-key rotate`) may have rotated it.
    ///
    /// # Errors
    /// The vault's error when decryption fails even with the current file.
    pub fn open(&self, sealed: &Sealed) -> Result<ProviderSecret, VaultError> {
        match self.ring().open(sealed) {
            Err(VaultError::UnknownKeyVersion { .. }) => {
                if let MasterKeySource::File(path) = &self.source {
                    self.replace(KeyRing::load_file(path)?);
                }
                self.ring().open(sealed)
            }
            other => other,
        }
    }
}
