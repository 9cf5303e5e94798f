//! The cluster's view of the model (`weft agent --etcd`), taken like any
//! other change: merged into the model ([`crate::model::cluster::merge`]),
//! applied, committed to the local store. Whatever the merge could not
//! take is returned, for the agent to log and count.

use super::Engine;
use crate::{
    error::Result,
    model::cluster::{ClusterView, merge},
};

impl Engine {
    /// Makes the model's cluster part `view`; returns what was skipped.
    pub async fn merge_cluster(&mut self, view: &ClusterView) -> Result<Vec<String>> {
        self.become_writer().await?;
        let merged = merge(&self.snapshot.model, view);
        if merged.model != self.snapshot.model {
            self.commit_model(merged.model).await?;
        }
        Ok(merged.skipped)
    }
}
