//! Watching the configuration file for changes (inotify; tokio adapter), so that a Kubernetes
//! ConfigMap update applies without a signal: the kubelet writes the new files into a fresh
//! directory and swaps the `..data` symlink, so the *directory* is watched (a watch on the file
//! would follow the old inode and never fire again). Editors that write a temporary file and
//! rename it over the original are seen the same way. Events come in bursts: a change is
//! reported once the directory has been quiet for [`SETTLE`].

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::{Interest, unix::AsyncFd};

/// The inotify descriptor as tokio wants it (nix exposes it through `AsFd` only).
#[derive(Debug)]
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Quiet time after the last event of a burst before the change is reported.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Why the configuration file cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "watching {path} for configuration changes (inotify_init1/inotify_add_watch): {source}"
    )]
    Inotify {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("registering the inotify descriptor with the reactor: {0}")]
    Reactor(#[source] std::io::Error),
}

/// A watch on the directory of one configuration file.
#[derive(Debug)]
pub struct ConfigWatch {
    inotify: AsyncFd<InotifyFd>,
    /// The file's name in its directory, and `..data` (the kubelet's symlink).
    names: [OsString; 2],
}

impl ConfigWatch {
    /// Watches the directory holding `file` (inside a tokio runtime).
    pub fn new(file: &Path) -> Result<Self, WatchError> {
        let directory = match file.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let error = |source| WatchError::Inotify {
            path: directory.clone(),
            source,
        };
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(error)?;
        inotify
            .add_watch(
                &directory,
                AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_ATTRIB,
            )
            .map_err(error)?;
        let name = file.file_name().map(OsString::from).unwrap_or_default();
        // SAFETY: the fd is the inotify instance's, owned by the value the AsyncFd owns for its
        // whole life; `as_raw_fd` always returns that same fd.
        let inotify =
            unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) }
                .map_err(|error| WatchError::Reactor(error.into_parts().1))?;
        Ok(Self {
            inotify,
            names: [name, OsString::from("..data")],
        })
    }

    /// Resolves after the file (or the symlink the kubelet swaps) changed and the directory
    /// has then been quiet for `SETTLE`.
    pub async fn changed(&mut self) -> Result<(), WatchError> {
        loop {
            if self.read_relevant().await? {
                break;
            }
        }
        // Let the burst finish (the kubelet creates, links and removes several entries).
        while tokio::time::timeout(SETTLE, self.read_relevant())
            .await
            .is_ok()
        {}
        Ok(())
    }

    /// Waits for events; whether any concerns the file.
    async fn read_relevant(&mut self) -> Result<bool, WatchError> {
        let mut guard = self
            .inotify
            .readable_mut()
            .await
            .map_err(WatchError::Reactor)?;
        match guard.get_inner().0.read_events() {
            Ok(events) => Ok(events.iter().any(|event| {
                event
                    .name
                    .as_ref()
                    .is_some_and(|name| self.names.iter().any(|watched| watched == name))
            })),
            Err(nix::Error::EAGAIN) => {
                guard.clear_ready();
                Ok(false)
            }
            Err(source) => Err(WatchError::Inotify {
                path: PathBuf::from("(config directory)"),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_configmap_style_symlink_swap_is_one_change() {
        let root = std::env::temp_dir().join(crate::netns::unique_name("mirror-watch-"));
        std::fs::create_dir_all(root.join("..2026_01")).unwrap();
        std::fs::write(root.join("..2026_01/mirror.toml"), "a").unwrap();
        std::os::unix::fs::symlink("..2026_01", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/mirror.toml", root.join("mirror.toml")).unwrap();
        let mut watch = ConfigWatch::new(&root.join("mirror.toml")).unwrap();
        // The kubelet's update: a new directory, a new symlink renamed over `..data`.
        std::fs::create_dir_all(root.join("..2026_02")).unwrap();
        std::fs::write(root.join("..2026_02/mirror.toml"), "b").unwrap();
        std::os::unix::fs::symlink("..2026_02", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        std::fs::remove_dir_all(root.join("..2026_01")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .expect("the swap is seen")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("mirror.toml")).unwrap(),
            "b"
        );
        // Nothing more happened: no second change.
        assert!(
            tokio::time::timeout(Duration::from_millis(600), watch.changed())
                .await
                .is_err()
        );
        std::fs::write(root.join("unrelated"), "x").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(600), watch.changed())
                .await
                .is_err(),
            "other files do not count"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
