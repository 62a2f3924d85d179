//! Files in and out of a container, as tar archives: upload and download, each with a
//! deadline (and a size cap on what comes out), and the archives of one file or of a folder.

use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;
use trawl_core::sandbox::SandboxError;

use crate::engine::{infra, within};
use crate::owner::now_secs;
use crate::sandbox::DockerSandbox;

impl DockerSandbox {
    /// Uploads a tar archive and unpacks it at `dest` (a folder that exists in the container).
    pub async fn upload_tar(&self, dest: &str, tar: Vec<u8>) -> Result<(), SandboxError> {
        let options = UploadToContainerOptionsBuilder::default()
            .path(dest)
            .build();
        let _turn = self.factory.turn().await;
        within(
            self.factory.api(),
            "copying files in",
            self.factory.client().upload_to_container(
                &self.id,
                Some(options),
                bollard::body_full(tar.into()),
            ),
        )
        .await
    }

    /// Downloads `path` (a file or folder) as a tar archive, at most `max` bytes.
    pub async fn download_tar(&self, path: &str, max: usize) -> Result<Vec<u8>, SandboxError> {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut stream = self
            .factory
            .client()
            .download_from_container(&self.id, Some(options));
        let mut bytes = Vec::new();
        let read = async {
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        bytes.extend_from_slice(&c);
                        if bytes.len() > max {
                            return Err(SandboxError::Infra(format!(
                                "`{path}` is larger than {} MiB",
                                max >> 20
                            )));
                        }
                    }
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => {
                        return Err(SandboxError::Infra(format!("`{path}` does not exist")));
                    }
                    Err(e) => return Err(infra("copying files out", e)),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(self.factory.api(), read).await {
            Ok(r) => r.map(|()| bytes),
            Err(_) => Err(infra("copying files out", "no answer in time")),
        }
    }
}

/// A tar archive holding one file at `path` (relative), mode 0644.
pub fn tar_one_file(path: &str, contents: &[u8]) -> std::io::Result<Vec<u8>> {
    tar_file(path, contents, 0o644)
}

/// A tar archive holding one file at `path` (relative) with `mode`.
pub fn tar_file(path: &str, contents: &[u8], mode: u32) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(contents.len() as u64);
    header.set_mode(mode);
    header.set_mtime(now_secs());
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, contents)?;
    builder.into_inner()
}

/// A tar archive of the folder `dir` (its contents, `.git` included) under `prefix`.
pub fn tar_dir(dir: &std::path::Path, prefix: &str) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(prefix, dir)?;
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_archives_unpack() {
        let tar = tar_one_file("testbed/a/b.txt", b"hello").expect("tar");
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut entries = archive.entries().expect("entries");
        let mut e = entries.next().expect("one").expect("entry");
        assert_eq!(e.path().expect("path").to_str(), Some("testbed/a/b.txt"));
        let mut s = String::new();
        std::io::Read::read_to_string(&mut e, &mut s).expect("read");
        assert_eq!(s, "hello");
    }
}
