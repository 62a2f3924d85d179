//! The pool of listed servers: which server each episode uses, at most `sessions_per_server`
//! sessions on each.

use std::sync::{Arc, Mutex};

use trawl_core::EnvironmentError;

/// Which server each episode uses: at most `per_server` sessions on each.
pub(crate) struct Pool {
    slots: Arc<tokio::sync::Semaphore>,
    busy: Arc<Mutex<Vec<usize>>>,
}

/// An episode's place on a server; given back when dropped.
pub(crate) struct Slot {
    pub(crate) server: usize,
    busy: Arc<Mutex<Vec<usize>>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut b) = self.busy.lock() {
            b[self.server] = b[self.server].saturating_sub(1);
        }
    }
}

impl Pool {
    pub(crate) fn new(servers: usize, per_server: usize) -> Self {
        Pool {
            slots: Arc::new(tokio::sync::Semaphore::new(servers * per_server)),
            busy: Arc::new(Mutex::new(vec![0; servers])),
        }
    }

    /// Waits for a free session and takes it on the least busy server.
    pub(crate) async fn take(&self) -> Result<Slot, EnvironmentError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| EnvironmentError::Runtime("the server pool is closed".into()))?;
        let mut busy = self
            .busy
            .lock()
            .map_err(|_| EnvironmentError::Runtime("the server pool is unusable".into()))?;
        let server = (0..busy.len()).min_by_key(|i| busy[*i]).unwrap_or(0);
        busy[server] += 1;
        Ok(Slot {
            server,
            busy: self.busy.clone(),
            _permit: permit,
        })
    }
}
