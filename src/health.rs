//! Failures that make a process unready whatever its dependencies answer.
//! A part that breaks for good (an apply lane that died) reports on the
//! process's [`Health`] before the process winds down, so that `/readyz`
//! says why during the seconds it still runs, rather than answering ready
//! while a partition stalls.

use std::sync::{Arc, Mutex};

/// One process's failures; clones share them. Passed explicitly, not
/// global, so that several engines in one test process stay apart.
#[derive(Clone, Debug, Default)]
pub struct Health(Arc<Mutex<Vec<String>>>);

impl Health {
    /// Marks the process unready for good, with the reason `/readyz` shows.
    pub fn report_failure(&self, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::error!(reason = %reason, "this process is no longer ready");
        self.locked().push(reason);
    }

    /// Every failure reported so far, oldest first.
    pub fn failures(&self) -> Vec<String> {
        self.locked().clone()
    }

    /// A panic elsewhere while holding the lock must not hide a failure.
    fn locked(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
