//! A plant CA and an expert identity issued by it, in a temporary directory:
//! what a device trusts (`plant_ca` in its agent.toml) and what an expert
//! connects with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoulder::identity::{self, Identity};

use crate::tempdir::TempDir;

/// A plant CA and one expert certificate signed by it, removed on drop.
#[derive(Debug)]
pub struct Pki {
    dir: TempDir,
    expert_dir: PathBuf,
    expert_name: String,
    ca_pem: Vec<u8>,
}

impl Pki {
    /// Makes the CA `ca_name` and an expert certificate for `expert_name`
    /// valid for `days`. The error names the step that failed.
    pub fn new(ca_name: &str, expert_name: &str, days: u32) -> Result<Self, String> {
        let dir = TempDir::new("pki").map_err(|e| format!("temporary directory: {e}"))?;
        let ca = dir.path().join("ca");
        let expert_dir = dir.path().join("expert");
        identity::init_ca(&ca, ca_name).map_err(|e| format!("plant CA: {e}"))?;
        identity::issue_expert(&ca, expert_name, &expert_dir, days)
            .map_err(|e| format!("expert: {e}"))?;
        let ca_pem = std::fs::read(ca.join("ca.crt")).map_err(|e| format!("ca.crt: {e}"))?;
        Ok(Self {
            dir,
            expert_dir,
            expert_name: expert_name.to_string(),
            ca_pem,
        })
    }

    /// The CA certificate (PEM), for the device's `plant_ca`.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// The name on the expert's certificate (the device's prompt shows it).
    pub fn expert_name(&self) -> &str {
        &self.expert_name
    }

    /// The directory everything is in; other per-run files (a known-hosts
    /// file) may go there too and are removed with it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The expert's identity, without the plant CA: a device makes its own
    /// key at first start, not signed by the plant CA, so the expert trusts
    /// it on first use (as `--accept-new` does).
    pub fn expert_identity(&self) -> Result<Arc<Identity>, String> {
        let mut id =
            Identity::load(&self.expert_dir).map_err(|e| format!("expert identity: {e}"))?;
        id.plant_ca = None;
        Ok(Arc::new(id))
    }
}
