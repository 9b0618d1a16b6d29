//! Opening a data directory, and what happens on the very first start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use compresh_keys::ApiKey;
use compresh_store::Store;
use compresh_vault::ProviderSecret;

use crate::master_keys::MasterKeys;
use crate::ops::{self, KeyRequest, OpsError, ProviderRequest};

/// The SQLite file inside the data directory.
pub const STORE_FILE: &str = "compresh.db";

/// The name of the account created on first start.
pub const DEFAULT_ACCOUNT: &str = "default";

/// An opened data directory: the store and the master key ring.
pub struct DataDir {
    /// Where it lives.
    pub path: PathBuf,
    /// Accounts, keys, providers, usage.
    pub store: Store,
    /// The key ring for provider keys.
    pub master_keys: Arc<MasterKeys>,
}

impl DataDir {
    /// Create the directory if needed (mode 0700) and open the store and the key ring.
    ///
    /// # Errors
    /// Each failure names the file and the problem.
    pub fn open(path: &Path, master_key_env: Option<&str>) -> anyhow::Result<Self> {
        create_private_dir(path)?;
        let (master_keys, _created) = MasterKeys::load(path, master_key_env)
            .map_err(|error| anyhow::anyhow!("master key: {error}"))?;
        let store_path = path.join(STORE_FILE);
        let store = Store::open(&store_path)
            .map_err(|error| anyhow::anyhow!("store {}: {error}", store_path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            store,
            master_keys: Arc::new(master_keys),
        })
    }
}

fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path).map_err(|error| {
        anyhow::anyhow!("cannot create data directory {}: {error}", path.display())
    })
}

/// What the first start set up.
pub struct FirstStart {
    /// The key to show once.
    pub api_key: ApiKey,
    /// Providers stored from the environment.
    pub providers: Vec<String>,
}

/// On an empty store: create the default account, store provider keys found in the environment,
/// and create one API key. Returns `None` when the store already has accounts.
///
/// # Errors
/// A store or vault failure.
pub fn first_start(
    data: &DataDir,
    openai_key: Option<String>,
    anthropic_key: Option<String>,
) -> Result<Option<FirstStart>, OpsError> {
    if !data.store.list_accounts()?.is_empty() {
        return Ok(None);
    }
    ops::create_account(&data.store, DEFAULT_ACCOUNT, "free")?;
    let mut providers = Vec::new();
    for (name, secret) in [("openai", openai_key), ("anthropic", anthropic_key)] {
        let Some(secret) = secret.filter(|s| !s.trim().is_empty()) else {
            continue;
        };
        ops::set_provider(
            &data.store,
            &data.master_keys,
            ProviderRequest {
                account: DEFAULT_ACCOUNT.to_owned(),
                name: name.to_owned(),
                kind: None,
                base_url: None,
                secret: Some(ProviderSecret::new(secret.trim().to_owned())),
            },
        )?;
        providers.push(name.to_owned());
    }
    let (api_key, _record) = ops::create_key(
        &data.store,
        KeyRequest {
            account: DEFAULT_ACCOUNT.to_owned(),
            name: "default".to_owned(),
            ..KeyRequest::default()
        },
    )?;
    Ok(Some(FirstStart { api_key, providers }))
}
