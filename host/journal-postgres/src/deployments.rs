//! Deployed components in `stead_deployments`, shared by every node of the
//! database. (Filled in with the deployments of the shared store.)

/// A component as the database keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeployment {
    /// Increases with every deploy: a node loads those past the last it saw.
    pub seq: u64,
    pub type_name: String,
    pub sha256: String,
    pub component: Vec<u8>,
}
