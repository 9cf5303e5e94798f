//! The store: where the model is kept, behind one trait so the embedded
//! local file ([`file::FileStore`], the default) and a cluster store can
//! serve the same engine. Every commit is a compare-and-swap on the
//! revision the writer read, so two writers never overwrite each other
//! unseen, and a watch reports each new revision after a given one.

pub mod cluster;
pub mod file;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::{error::Result, model::Model};

/// A store revision: 0 for a store that was never written, then one more
/// per commit.
pub type Revision = u64;

/// The model as of one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub model: Model,
    pub revision: Revision,
}

/// Where the model lives.
pub trait Store: Send + Sync {
    /// The model now (an empty model at revision 0 when nothing is stored).
    fn read(&self) -> BoxFuture<'_, Result<Snapshot>>;

    /// Replaces the model with `model` if the stored revision is still
    /// `expected`, returning the new revision; a conflict error (nothing
    /// written) if another writer committed since.
    fn commit<'a>(
        &'a self,
        expected: Revision,
        model: &'a Model,
    ) -> BoxFuture<'a, Result<Revision>>;

    /// Snapshots of every revision after `after`, as they are committed
    /// (a slow reader may see only the latest of several).
    fn watch(&self, after: Revision) -> Result<mpsc::Receiver<Snapshot>>;

    /// Removes everything stored (teardown); absent is fine.
    fn clear(&self) -> BoxFuture<'_, Result<()>>;
}
