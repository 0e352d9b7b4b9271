//! The node's birth/death sequence number (`bdSeq`), kept in a small file so that it goes on
//! across restarts and crashes.
//!
//! Every MQTT connection gets the next number (0–255, wrapping), and the number is on disk
//! *before* the CONNECT that carries it in its will (NDEATH) goes out: after a SIGKILL the host
//! sees the NDEATH with the old number and then an NBIRTH with the next one, never a repeat
//! that it would take for the old session. The file (`sparkplug.bdseq` beside the outbox) is
//! written atomically: a temporary file, fsynced, renamed over the old one, and the directory
//! fsynced, so a crash leaves either the old or the new number, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the counter, in the outbox's directory.
pub const FILE_NAME: &str = "sparkplug.bdseq";

/// The durable `bdSeq` counter.
#[derive(Debug)]
pub struct BdSeq {
    path: PathBuf,
}

impl BdSeq {
    /// The counter in `dir`.
    pub fn in_dir(dir: &Path) -> BdSeq {
        BdSeq {
            path: dir.join(FILE_NAME),
        }
    }

    /// The number of the last connection, if any (a damaged file counts as none, logged).
    pub fn last(&self) -> Option<u8> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        match text.trim().parse() {
            Ok(n) => Some(n),
            Err(_) => {
                tracing::warn!(path = %self.path.display(), "damaged bdSeq file; starting again at 0");
                None
            }
        }
    }

    /// Takes the number for the next connection and stores it durably before returning it.
    pub fn next(&self) -> std::io::Result<u8> {
        let n = self.last().map_or(0, |n| n.wrapping_add(1));
        let tmp = self.path.with_extension("bdseq.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{n}")?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            // The rename is durable only once the directory is.
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_across_instances_and_wraps_after_255() {
        let dir = tempfile::tempdir().unwrap();
        let a = BdSeq::in_dir(dir.path());
        assert_eq!(a.last(), None);
        assert_eq!(a.next().unwrap(), 0);
        assert_eq!(a.next().unwrap(), 1);
        // A new process reads what the last one stored.
        let b = BdSeq::in_dir(dir.path());
        assert_eq!(b.last(), Some(1));
        std::fs::write(dir.path().join(FILE_NAME), "255\n").unwrap();
        assert_eq!(b.next().unwrap(), 0);
        std::fs::write(dir.path().join(FILE_NAME), "x").unwrap();
        assert_eq!(b.next().unwrap(), 0, "a damaged file starts again");
        assert!(!dir.path().join("sparkplug.bdseq.tmp").exists());
    }
}
