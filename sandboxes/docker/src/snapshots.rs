//! The snapshot images a backend's sandboxes were frozen as, with the commits under way, and
//! the mark on a snapshot's name that says this build's runner is inside it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The snapshot images a backend's sandboxes were frozen as, and the commits under way.
#[derive(Default)]
pub(crate) struct Snapshots {
    pub(crate) names: Mutex<HashSet<String>>,
    /// Held (shared) by each commit under way; shutdown takes it whole to wait for them.
    pub(crate) freezing: Arc<tokio::sync::RwLock<()>>,
}

impl Snapshots {
    pub(crate) fn note(&self, image: &str) {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(image.to_string());
    }

    pub(crate) fn forget(&self, image: &str) -> bool {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(image)
    }

    pub(crate) fn knows(&self, image: &str) -> bool {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(image)
    }
}

/// Ends a snapshot's name when this build's runner is inside it.
pub(crate) const RUNNER_INSIDE: &str = "#runner";
