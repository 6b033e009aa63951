//! Local file-backed secret store (single machine): one file per secret, mode 0600, in a
//! directory of mode 0700, written atomically (temporary file, fsync, rename).

use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::{validate_name, SecretError, SecretStore};

#[derive(Debug, Clone)]
pub struct FileSecretStore {
    dir: PathBuf,
}

fn io(e: std::io::Error) -> SecretError {
    SecretError::Unavailable(e.kind().to_string())
}

impl FileSecretStore {
    pub fn new(dir: PathBuf) -> Result<Self, SecretError> {
        std::fs::create_dir_all(&dir).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> Result<PathBuf, SecretError> {
        validate_name(name)?;
        Ok(self.dir.join(format!("{name}.secret")))
    }
}

#[async_trait]
impl SecretStore for FileSecretStore {
    async fn get(&self, name: &str) -> Result<Option<SecretString>, SecretError> {
        let path = self.path(name)?;
        tokio::task::spawn_blocking(move || match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(SecretString::from(s))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        })
        .await
        .map_err(|e| SecretError::Other(e.to_string()))?
    }

    async fn set(&self, name: &str, value: &SecretString) -> Result<(), SecretError> {
        let path = self.path(name)?;
        let tmp = self
            .dir
            .join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let value = value.clone();
        tokio::task::spawn_blocking(move || {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let write = (|| {
                let mut f = opts.open(&tmp)?;
                f.write_all(value.expose_secret().as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                // The rename itself is durable only once the directory is synced.
                #[cfg(unix)]
                if let Some(dir) = path.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok(())
            })();
            if write.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            write.map_err(io)
        })
        .await
        .map_err(|e| SecretError::Other(e.to_string()))?
    }

    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        let path = self.path(name)?;
        tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        })
        .await
        .map_err(|e| SecretError::Other(e.to_string()))?
    }

    async fn ping(&self) -> Result<(), SecretError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let md = std::fs::metadata(&dir).map_err(io)?;
            if md.is_dir() && !md.permissions().readonly() {
                Ok(())
            } else {
                Err(SecretError::Unavailable(
                    "secret directory not writable".into(),
                ))
            }
        })
        .await
        .map_err(|e| SecretError::Other(e.to_string()))?
    }
}
