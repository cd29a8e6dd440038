//! Thread pools, one per requested width, built once and reused: building a rayon pool per call
//! would cost more than encrypting a few megabytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{Error, Result};

/// The default width: every core the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Upper bound on a requested width; more threads than this only waste memory.
pub const MAX_THREADS: usize = 256;

/// Resolves the caller's `threads` argument: `None` means all cores, `Some(0)` is an error.
pub fn resolve_threads(threads: Option<usize>) -> Result<usize> {
    match threads {
        None => Ok(default_threads()),
        Some(0) => Err(Error::InvalidArgument("threads must be at least 1".into())),
        Some(n) if n > MAX_THREADS => Err(Error::InvalidArgument(format!(
            "threads must be at most {MAX_THREADS}, got {n}"
        ))),
        Some(n) => Ok(n),
    }
}

/// A shared pool with exactly `threads` workers.
pub fn pool(threads: usize) -> Result<Arc<ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut pools = pools
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(pool) = pools.get(&threads) {
        return Ok(Arc::clone(pool));
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("e2ebackup-{i}"))
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start {threads} threads: {e}")))?;
    let pool = Arc::new(pool);
    pools.insert(threads, Arc::clone(&pool));
    Ok(pool)
}
