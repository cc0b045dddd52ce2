//! What the unit tests of several modules share.

use std::path::PathBuf;

/// Removes a test's directory when the test ends, passed or failed.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
