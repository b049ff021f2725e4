//! The archive of `like-events` beyond retention: every record of every
//! partition, copied by the archiver (`likes-replay archive run`) into Avro
//! Object Container Files ([`format`]) in an object store: a local directory
//! by default, S3, GCS or Azure by URL (`ARCHIVE_URL`, through the
//! `object_store` crate).
//!
//! Layout: `<root>/<topic>/<partition>/<first>-<last>.avro`, one folder per
//! partition, offsets zero-padded to 20 digits so names sort in offset order.
//! A file named `first-last` holds every record of the partition whose offset
//! lies in `first..=last`; offsets in the range without a record are not
//! records (transaction markers). Files are written under `<name>.tmp` and
//! renamed when complete, so a listed `.avro` file is always whole; a `.tmp`
//! left by a crash is garbage and is removed when the archiver starts. The
//! archiver resumes at the offset after the last complete file: no gap and no
//! overlap, even after `kill -9`.
//!
//! What the archive covers per partition is [`Coverage`]: the readers
//! (history, explain, count, rebuild) take from it the offsets the topic no
//! longer holds and the rest from the topic.

pub mod format;
mod schemas;

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload};

use crate::Error;
pub use format::{DecodedFile, FileBuilder, Record, WriterSchema};
pub use schemas::WriterSchemas;

/// The name of one archive file: the offsets it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct FileName {
    pub first: i64,
    pub last: i64,
}

impl FileName {
    const SUFFIX: &'static str = ".avro";

    /// `00000000000000000000-00000000000000000099.avro`.
    pub fn file_name(&self) -> String {
        format!("{:020}-{:020}{}", self.first, self.last, Self::SUFFIX)
    }

    /// The name of a complete file, or `None` for anything else (a `.tmp`).
    pub fn parse(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(Self::SUFFIX)?;
        let (first, last) = stem.split_once('-')?;
        let name = Self {
            first: first.parse().ok()?,
            last: last.parse().ok()?,
        };
        (name.first >= 0 && name.last >= name.first).then_some(name)
    }

    /// Offsets covered.
    pub fn len(&self) -> i64 {
        self.last - self.first + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The complete files of one partition, in offset order, and what they cover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    pub files: Vec<FileName>,
}

/// Where the files of a partition fail to follow each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Flaw {
    /// Offsets `from..to` are in no file.
    Gap { from: i64, to: i64 },
    /// Two files both cover offsets `from..=to`.
    Overlap { from: i64, to: i64 },
}

impl Coverage {
    /// The offset after the last file: where the archiver goes on.
    pub fn next_offset(&self) -> Option<i64> {
        self.files.last().map(|f| f.last + 1)
    }

    /// Gaps (from offset 0 on) and overlaps between the files.
    pub fn flaws(&self) -> Vec<Flaw> {
        let mut flaws = Vec::new();
        let mut expected = 0;
        for f in &self.files {
            if f.first > expected {
                flaws.push(Flaw::Gap {
                    from: expected,
                    to: f.first,
                });
            } else if f.first < expected {
                flaws.push(Flaw::Overlap {
                    from: f.first,
                    to: (expected - 1).min(f.last),
                });
            }
            expected = expected.max(f.last + 1);
        }
        flaws
    }

    /// Where an unbroken run of files ending at or after `log_start` begins,
    /// when there is one: with the topic from `log_start` on, the partition
    /// can be read from there. `None` when the archive does not reach the
    /// topic (nothing archived yet, or a gap just before `log_start`).
    pub fn reaches(&self, log_start: i64) -> Option<i64> {
        let mut start = None;
        let mut expected = None;
        for f in &self.files {
            if expected != Some(f.first) {
                start = Some(f.first);
            }
            expected = Some(f.last + 1);
            if f.last + 1 >= log_start {
                return start.filter(|s| *s < log_start);
            }
        }
        None
    }

    /// The files holding any offset of `from..to`.
    pub fn files_for(&self, from: i64, to: i64) -> Vec<FileName> {
        self.files
            .iter()
            .filter(|f| f.last >= from && f.first < to)
            .copied()
            .collect()
    }
}

/// The archive of one topic in one store.
#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
    topic: String,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("url", &self.url)
            .field("topic", &self.topic)
            .finish()
    }
}

impl Archive {
    /// The archive of `topic` at `url`: a directory path or `file://` URL
    /// (created when missing), or `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` with credentials from the environment as each
    /// store's SDK reads them (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
    pub fn open(url: &str, topic: &str) -> Result<Self, Error> {
        let setting = |message: String| Error::Setting {
            name: "ARCHIVE_URL",
            message,
        };
        let redacted = crate::settings::redact(url);
        let (store, root): (Arc<dyn ObjectStore>, Path) = if let Some(dir) = local_dir(url) {
            std::fs::create_dir_all(&dir)
                .map_err(|e| setting(format!("cannot create directory {}: {e}", dir.display())))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| setting(e.to_string()))?;
            (Arc::new(store), Path::default())
        } else {
            let parsed = url::Url::parse(url).map_err(|e| setting(format!("{redacted}: {e}")))?;
            let (scheme, root) =
                ObjectStoreScheme::parse(&parsed).map_err(|e| setting(e.to_string()))?;
            let store: Arc<dyn ObjectStore> = match scheme {
                ObjectStoreScheme::AmazonS3 => Arc::new(
                    object_store::aws::AmazonS3Builder::from_env()
                        .with_url(url)
                        .build()
                        .map_err(|e| setting(e.to_string()))?,
                ),
                ObjectStoreScheme::GoogleCloudStorage => Arc::new(
                    object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_url(url)
                        .build()
                        .map_err(|e| setting(e.to_string()))?,
                ),
                ObjectStoreScheme::MicrosoftAzure => Arc::new(
                    object_store::azure::MicrosoftAzureBuilder::from_env()
                        .with_url(url)
                        .build()
                        .map_err(|e| setting(e.to_string()))?,
                ),
                other => {
                    return Err(setting(format!(
                        "{redacted}: {other:?} is not an archive store (use a directory, s3://, gs:// or az://)"
                    )));
                }
            };
            (store, root)
        };
        Ok(Self {
            store,
            root,
            url: redacted,
            topic: topic.to_string(),
        })
    }

    /// As [`Archive::open`], but a local directory that does not exist is no
    /// archive (`None`) rather than one to create: for readers, which must
    /// not leave an empty `archive/` wherever they run.
    pub fn open_existing(url: &str, topic: &str) -> Result<Option<Self>, Error> {
        match local_dir(url) {
            Some(dir) if !dir.is_dir() => Ok(None),
            _ => Self::open(url, topic).map(Some),
        }
    }

    /// Whether the files of `partition` hold every offset of `from..=to`.
    pub async fn holds(&self, partition: i32, from: i64, to: i64) -> Result<bool, Error> {
        Ok(self
            .reach(partition, from)
            .await?
            .is_some_and(|last| last >= to))
    }

    /// The last offset of the unbroken run of files of `partition` that
    /// holds `from`, if one does.
    pub async fn reach(&self, partition: i32, from: i64) -> Result<Option<i64>, Error> {
        let coverage = self.coverage(partition).await?;
        let mut last: Option<i64> = None;
        for f in coverage.files.iter().filter(|f| f.last >= from) {
            match last {
                None if f.first <= from => last = Some(f.last),
                None => return Ok(None),
                Some(l) if f.first == l + 1 => last = Some(f.last),
                Some(_) => break,
            }
        }
        Ok(last)
    }

    /// The store's URL, without secrets.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn unavailable(&self, e: object_store::Error) -> Error {
        Error::ArchiveUnavailable {
            url: self.url.clone(),
            reason: e.to_string(),
        }
    }

    fn folder(&self, partition: i32) -> Path {
        self.root
            .clone()
            .join(self.topic.as_str())
            .join(partition.to_string())
    }

    /// The path of a file, for messages.
    pub fn path(&self, partition: i32, name: FileName) -> String {
        self.folder(partition).join(name.file_name()).to_string()
    }

    /// Every object in the partition's folder: complete files and leftovers.
    async fn list(&self, partition: i32) -> Result<(Vec<FileName>, Vec<Path>), Error> {
        let folder = self.folder(partition);
        let objects: Vec<_> = self
            .store
            .list(Some(&folder))
            .try_collect()
            .await
            .map_err(|e| self.unavailable(e))?;
        let mut files = Vec::new();
        let mut leftovers = Vec::new();
        for object in objects {
            match object.location.filename().and_then(FileName::parse) {
                Some(name) => files.push(name),
                None => leftovers.push(object.location),
            }
        }
        files.sort();
        Ok((files, leftovers))
    }

    /// The complete files of `partition`.
    pub async fn coverage(&self, partition: i32) -> Result<Coverage, Error> {
        Ok(Coverage {
            files: self.list(partition).await?.0,
        })
    }

    /// Removes what a writer that died mid-file left behind (its `.tmp`);
    /// returns how many objects went.
    pub async fn remove_leftovers(&self, partition: i32) -> Result<usize, Error> {
        let (_, leftovers) = self.list(partition).await?;
        for path in &leftovers {
            tracing::info!(path = %path, "removing an unfinished archive file");
            self.store
                .delete(path)
                .await
                .map_err(|e| self.unavailable(e))?;
        }
        Ok(leftovers.len())
    }

    /// Stores a complete file: written under a temporary name, then renamed,
    /// so a reader never lists a partial one.
    pub async fn put(&self, partition: i32, name: FileName, bytes: Vec<u8>) -> Result<(), Error> {
        let folder = self.folder(partition);
        let done = folder.clone().join(name.file_name());
        let temporary = folder.join(format!("{}.tmp", name.file_name()));
        self.store
            .put(&temporary, PutPayload::from(bytes))
            .await
            .map_err(|e| self.unavailable(e))?;
        self.store
            .rename(&temporary, &done)
            .await
            .map_err(|e| self.unavailable(e))
    }

    /// A file's bytes.
    pub async fn get(&self, partition: i32, name: FileName) -> Result<Vec<u8>, Error> {
        let path = self.folder(partition).join(name.file_name());
        let bytes = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.unavailable(e))?
            .bytes()
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(bytes.to_vec())
    }

    /// A file read back and checked against its name: its header says the
    /// same partition and offsets, and its records lie in its range, in order.
    pub async fn read(&self, partition: i32, name: FileName) -> Result<DecodedFile, Error> {
        let path = self.path(partition, name);
        let bytes = self.get(partition, name).await?;
        let file = format::decode(&bytes, &path)?;
        let corrupt = |reason: String| Error::ArchiveCorrupt {
            path: path.clone(),
            reason,
        };
        if (file.partition, file.first, file.last) != (partition, name.first, name.last) {
            return Err(corrupt(format!(
                "its header says partition {} offsets {}..={}",
                file.partition, file.first, file.last
            )));
        }
        let mut previous = name.first - 1;
        for r in &file.records {
            if r.offset <= previous || r.offset > name.last {
                return Err(corrupt(format!(
                    "offset {} out of order or outside the file's range",
                    r.offset
                )));
            }
            previous = r.offset;
        }
        Ok(file)
    }
}

/// The directory of a local archive URL (a path, or `file://`); `None` for
/// an object store.
fn local_dir(url: &str) -> Option<std::path::PathBuf> {
    if url.contains("://") {
        url::Url::parse(url)
            .ok()
            .filter(|u| u.scheme() == "file")
            .and_then(|u| u.to_file_path().ok())
    } else {
        Some(std::path::PathBuf::from(url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(first: i64, last: i64) -> FileName {
        FileName { first, last }
    }

    #[test]
    fn names_sort_in_offset_order_and_parse_back() {
        let name = f(100, 1_999);
        assert_eq!(
            name.file_name(),
            "00000000000000000100-00000000000000001999.avro"
        );
        assert_eq!(FileName::parse(&name.file_name()), Some(name));
        assert!(f(9, 9).file_name() < f(10, 10).file_name());
        assert_eq!(FileName::parse("x.avro.tmp"), None);
        assert_eq!(FileName::parse("5-4.avro"), None);
    }

    #[test]
    fn coverage_names_gaps_and_overlaps() {
        let c = Coverage {
            files: vec![f(0, 9), f(10, 19), f(25, 30), f(28, 40)],
        };
        assert_eq!(
            c.flaws(),
            vec![
                Flaw::Gap { from: 20, to: 25 },
                Flaw::Overlap { from: 28, to: 30 }
            ]
        );
        assert_eq!(c.next_offset(), Some(41));
        assert!(
            Coverage {
                files: vec![f(0, 4), f(5, 5)]
            }
            .flaws()
            .is_empty()
        );
    }

    #[test]
    fn the_archive_reaches_the_topic_only_through_an_unbroken_run() {
        let c = Coverage {
            files: vec![f(0, 9), f(10, 19), f(25, 30)],
        };
        // The topic starts at 15: files 0..=19 join it.
        assert_eq!(c.reaches(15), Some(0));
        assert_eq!(c.reaches(20), Some(0));
        // The topic starts at 22: offsets 20, 21 are nowhere.
        assert_eq!(c.reaches(22), None);
        assert_eq!(c.reaches(27), Some(25));
        // Nothing to add when the topic holds everything.
        assert_eq!(c.reaches(0), None);
        assert_eq!(Coverage::default().reaches(5), None);
    }

    #[test]
    fn the_files_for_a_range_are_those_that_touch_it() {
        let c = Coverage {
            files: vec![f(0, 9), f(10, 19), f(20, 29)],
        };
        assert_eq!(c.files_for(9, 11), vec![f(0, 9), f(10, 19)]);
        assert_eq!(c.files_for(20, 20), vec![]);
        assert_eq!(c.files_for(0, 100).len(), 3);
    }

    #[tokio::test]
    async fn a_local_archive_stores_whole_files_and_forgets_leftovers() {
        let dir = std::env::temp_dir().join(format!("likes-archive-unit-{}", uuid::Uuid::new_v4()));
        let archive = Archive::open(&dir.display().to_string(), "t").unwrap();
        let mut file = FileBuilder::new("t", 3, 0, None).unwrap();
        file.push(&Record {
            offset: 0,
            timestamp_ms: None,
            key: None,
            payload: Some(b"x".to_vec()),
        });
        archive
            .put(3, f(0, 1), file.finish(1).unwrap())
            .await
            .unwrap();
        std::fs::write(
            dir.join("t/3/00000000000000000002-00000000000000000009.avro.tmp"),
            b"half",
        )
        .unwrap();
        assert_eq!(archive.coverage(3).await.unwrap().files, vec![f(0, 1)]);
        assert_eq!(archive.remove_leftovers(3).await.unwrap(), 1);
        assert_eq!(archive.remove_leftovers(3).await.unwrap(), 0);
        assert!(archive.holds(3, 0, 1).await.unwrap());
        assert!(archive.holds(3, 1, 1).await.unwrap());
        assert!(!archive.holds(3, 0, 2).await.unwrap());
        assert_eq!(archive.reach(3, 1).await.unwrap(), Some(1));
        assert_eq!(archive.reach(3, 2).await.unwrap(), None);
        let back = archive.read(3, f(0, 1)).await.unwrap();
        assert_eq!(back.records.len(), 1);
        assert!(matches!(
            archive.read(3, f(2, 3)).await,
            Err(Error::ArchiveUnavailable { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        let gone = dir.display().to_string();
        assert!(Archive::open_existing(&gone, "t").unwrap().is_none());
        assert!(!dir.exists(), "a reader creates no directory");
    }
}
