//! A scratch directory for tests, removed on drop (no tempfile dependency).

use std::fs;
use std::path::{Path, PathBuf};

pub(crate) struct TestDir(PathBuf);

impl TestDir {
    pub(crate) fn new(tag: &str) -> Self {
        let suffix = crate::util::random_suffix().expect("OS randomness");
        let path = std::env::temp_dir().join(format!(
            "edgearmor-bundle-{tag}-{}-{suffix}",
            std::process::id()
        ));
        fs::create_dir(&path).expect("creates the test directory");
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
