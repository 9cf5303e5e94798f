//! The local store: the model in `<state dir>/state.json`, with its
//! revision. Replaced atomically (temp file, fsync, rename, fsync of the
//! directory) so a crash leaves the old or the new file, never half of one;
//! a commit holds an exclusive `flock` on `<state dir>/lock` while it
//! compares the revision and writes, so writers in several processes
//! serialize and a stale one is refused.

use std::{
    fs::{self, File, OpenOptions},
    io::{ErrorKind, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Revision, Snapshot, Store};
use crate::{
    datapath::paths::Paths,
    error::{Error, Result},
    model::Model,
};

/// How often a watch looks at the file for a revision another process
/// committed.
const WATCH_POLL: Duration = Duration::from_millis(500);

/// `state.json`: the model with its revision beside its fields (files
/// written before revisions existed read as revision 0).
#[derive(Serialize, Deserialize)]
struct Document {
    #[serde(default)]
    revision: Revision,
    #[serde(flatten)]
    model: Model,
}

/// The model in a state directory.
#[derive(Clone, Debug)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub fn new(paths: &Paths) -> Self {
        Self {
            dir: paths.state_dir.clone(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// The stored snapshot, read without locking (the file is only ever
    /// replaced whole).
    pub fn read_now(&self) -> Result<Snapshot> {
        read_file(&self.path())
    }

    fn prepare_dir(&self) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| {
            Error::io(
                format!(
                    "cannot create state directory {}; pass --state-dir a writable directory",
                    self.dir.display()
                ),
                e,
            )
        })
    }

    fn lock(&self) -> Result<Flock<File>> {
        self.prepare_dir()?;
        let path = self.lock_path();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open lock file {}", path.display()), e))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| Error::sys(format!("cannot lock {}", path.display()), errno))
    }

    /// [`Store::commit`], synchronously.
    pub fn commit_now(&self, expected: Revision, model: &Model) -> Result<Revision> {
        let _lock = self.lock()?;
        let current = read_file(&self.path())?.revision;
        if current != expected {
            return Err(Error::Conflict(format!(
                "the store at {} changed while this change was prepared (revision {current}, \
                 expected {expected}); run the command again",
                self.path().display()
            )));
        }
        let revision = expected + 1;
        write_atomic(
            &self.path(),
            &Document {
                revision,
                model: model.clone(),
            },
        )?;
        Ok(revision)
    }
}

impl Store for FileStore {
    fn read(&self) -> BoxFuture<'_, Result<Snapshot>> {
        async move { self.read_now() }.boxed()
    }

    fn commit<'a>(
        &'a self,
        expected: Revision,
        model: &'a Model,
    ) -> BoxFuture<'a, Result<Revision>> {
        async move { self.commit_now(expected, model) }.boxed()
    }

    fn watch(&self, after: Revision) -> Result<mpsc::Receiver<Snapshot>> {
        let (tx, rx) = mpsc::channel(4);
        let path = self.path();
        tokio::spawn(async move {
            let mut seen = after;
            let mut tick = tokio::time::interval(WATCH_POLL);
            loop {
                tick.tick().await;
                match read_file(&path) {
                    Ok(snap) if snap.revision > seen => {
                        seen = snap.revision;
                        if tx.send(snap).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => log::warn!("store watch: {}", crate::error::chain(&e)),
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            let _lock = self.lock()?;
            match fs::remove_file(self.path()) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(
                    format!("cannot remove {}", self.path().display()),
                    e,
                )),
            }
        }
        .boxed()
    }
}

fn read_file(path: &Path) -> Result<Snapshot> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<Document>(&bytes)
            .map(|d| Snapshot {
                model: d.model,
                revision: d.revision,
            })
            .map_err(|source| Error::CorruptState {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Snapshot {
            model: Model::default(),
            revision: 0,
        }),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

fn write_atomic(path: &Path, doc: &Document) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".state.json.{}.tmp", std::process::id()));
    let result = (|| {
        let mut json = serde_json::to_vec_pretty(doc).map_err(std::io::Error::other)?;
        json.push(b'\n');
        let mut file = File::create(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("cannot write {}", path.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Network;

    fn store(name: &str) -> (FileStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("weft-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        (FileStore::new(&Paths::new("/nonexistent", &dir)), dir)
    }

    fn one_network() -> Model {
        let mut m = Model::default();
        m.networks.push(Network {
            name: "a".into(),
            id: 1,
            subnet: "10.1.0.0/24".parse().unwrap(),
            gateway: "10.1.0.1".parse().unwrap(),
            flood: false,
            masquerade: true,
            connected: vec![],
            vni: 0,
        });
        m
    }

    #[test]
    fn commits_compare_and_swap_the_revision() {
        let (s, dir) = store("cas");
        let empty = s.read_now().unwrap();
        assert_eq!((empty.revision, empty.model), (0, Model::default()));
        let m = one_network();
        assert_eq!(s.commit_now(0, &m).unwrap(), 1);
        let err = s.commit_now(0, &Model::default()).unwrap_err();
        assert!(err.to_string().contains("changed while"), "{err}");
        let read = s.read_now().unwrap();
        assert_eq!((read.revision, read.model), (1, m));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_without_a_revision_read_as_revision_zero() {
        let (s, dir) = store("old");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            s.path(),
            r#"{"version":1,"next_network_id":1,"networks":[],"endpoints":[]}"#,
        )
        .unwrap();
        assert_eq!(s.read_now().unwrap().revision, 0);
        assert_eq!(s.commit_now(0, &one_network()).unwrap(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_watch_reports_later_revisions() {
        let (s, dir) = store("watch");
        let mut rx = s.watch(0).unwrap();
        s.commit_now(0, &one_network()).unwrap();
        let snap = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(snap.revision, 1);
        assert_eq!(snap.model, one_network());
        fs::remove_dir_all(&dir).unwrap();
    }
}
