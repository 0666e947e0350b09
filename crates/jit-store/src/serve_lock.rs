//! One `serve` per SQLite file. SQLite has one writer and no way for two
//! brokers to share leases, so a second `serve` on the same file is refused
//! with the other process named: nobody runs "HA" on SQLite by mistake.
//! (PostgreSQL needs no such lock: replicas share it by design.)

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;

use crate::Backend;
use jit_app::StoreError;

/// Held while this process serves a SQLite file; released when dropped.
#[derive(Debug)]
pub struct ServeLock {
    _file: File,
    pub path: PathBuf,
}

/// Takes the serve lock of the SQLite file `url` names (`None` for
/// PostgreSQL and in-memory databases), or names who holds it.
pub fn lock_for_serving(url: &str) -> Result<Option<ServeLock>, StoreError> {
    if Backend::from_url(url)? != Backend::Sqlite {
        return Ok(None);
    }
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Database(format!("database URL: {e}")))?;
    let db = options.get_filename();
    if db.as_os_str().is_empty() || db.to_string_lossy().contains(":memory:") {
        return Ok(None);
    }
    let mut path = db.as_os_str().to_owned();
    path.push(".serve-lock");
    let path = PathBuf::from(path);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(StoreError::Database(format!(
                "another jit-broker ({}) is serving {}: SQLite allows one; run several replicas on PostgreSQL",
                holder.trim().trim_end_matches('.'),
                db.display()
            )));
        }
        Err(TryLockError::Error(e)) => {
            return Err(StoreError::Database(format!("{}: {e}", path.display())));
        }
    }
    let me = format!("pid {}", std::process::id());
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(me.as_bytes()));
    written.map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?;
    Ok(Some(ServeLock { _file: file, path }))
}
