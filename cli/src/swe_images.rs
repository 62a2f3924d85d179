//! Images without a registry. Nothing can be pulled on many machines (and many users sit behind
//! mirrors), so trawl builds what the bundled instances need itself:
//!
//! - the base image `trawl-swe-base:latest`: a Debian root file system made by
//!   `debootstrap --variant=minbase` with python3, pytest and git, imported into the engine;
//! - one image per bundled repository (`trawl-swe/NAME:latest`): the base with the repository
//!   at `/testbed`, saved from a container with `commit`.
//!
//! `trawl swe build-images` runs both; instances of other repositories name images the user
//! loads (`docker load`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;
use trawl_core::sandbox::{ExecLimits, Sandbox};
use trawl_sandbox_docker::{tar_dir, DockerFactory};

use trawl_swe::repos;

pub const BASE_IMAGE: &str = "trawl-swe-base:latest";
/// Where bundled repositories sit in their images, as in SWE-bench's images.
pub use trawl_swe::TESTBED;
/// Debian packages in the base image.
pub const BASE_PACKAGES: &str = "python3,python3-pytest,git,procps,patch,ca-certificates";
/// The label holding the key of what an image was built from: an image whose key differs
/// from what it would be built from now is built again.
pub const KEY_LABEL: &str = "trawl.content-key";
/// Changed when the way the images are built changes (their keys change with it).
const RECIPE: &str = "trawl swe images, recipe 1";

/// How `trawl swe build-images` builds.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub rebuild: bool,
    pub suite: String,
    pub mirror: String,
    /// Where the root file system is made (a temporary folder inside it).
    pub work_dir: PathBuf,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            rebuild: false,
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            work_dir: trawl_core::fetch::trawl_home().join("swe").join("build"),
        }
    }
}

/// The image a bundled repository's instances name.
pub fn repo_image(name: &str) -> String {
    format!("trawl-swe/{name}:latest")
}

fn split_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

/// The key of the base image `options` would build: its suite and packages.
pub fn base_key(options: &BuildOptions) -> String {
    trawl_core::fetch::sha256_hex(
        format!("{RECIPE}\nbase\n{}\n{BASE_PACKAGES}\n", options.suite).as_bytes(),
    )
}

/// The key of bundled repository `name`'s image: the base's key and the repository's content.
pub fn repo_key(options: &BuildOptions, name: &str) -> Result<String, String> {
    Ok(trawl_core::fetch::sha256_hex(
        format!(
            "{}\n{name}\n{}\n",
            base_key(options),
            repos::content_key(name)?
        )
        .as_bytes(),
    ))
}

/// Whether `image` is there and was built from what `key` says; logs what it found.
async fn current(
    factory: &DockerFactory,
    image: &str,
    key: &str,
    log: &(dyn Fn(&str) + Sync),
) -> Result<bool, String> {
    match factory
        .image_label(image, KEY_LABEL)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(k) if k == key => {
            log(&format!("{image}: present, up to date"));
            Ok(true)
        }
        Some(_) => {
            log(&format!(
                "{image}: built from other content; building it again"
            ));
            // Untagged now, so that it does not linger once replaced (an image others are
            // built on stays until they are replaced too).
            factory.remove_image(image).await;
            Ok(false)
        }
        None if factory.has_image(image).await.map_err(|e| e.to_string())? => {
            log(&format!(
                "{image}: present without a content key; building it again"
            ));
            factory.remove_image(image).await;
            Ok(false)
        }
        None => Ok(false),
    }
}

/// Builds the base image unless it is there already, built from the same suite and packages.
/// Returns whether it built.
pub async fn build_base(
    factory: &DockerFactory,
    options: &BuildOptions,
    log: &(dyn Fn(&str) + Sync),
) -> Result<bool, String> {
    let key = base_key(options);
    if !options.rebuild && current(factory, BASE_IMAGE, &key, log).await? {
        return Ok(false);
    }
    let Some(debootstrap) = which("debootstrap") else {
        return Err(
            "building the base image needs debootstrap: `apt-get install -y debootstrap` (as root)"
                .into(),
        );
    };
    std::fs::create_dir_all(&options.work_dir)
        .map_err(|e| format!("cannot create {}: {e}", options.work_dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix("rootfs-")
        .tempdir_in(&options.work_dir)
        .map_err(|e| {
            format!(
                "cannot create a folder in {}: {e}",
                options.work_dir.display()
            )
        })?;
    let rootfs = work.path().join("rootfs");
    log(&format!(
        "{BASE_IMAGE}: debootstrap --variant=minbase {} from {} (1-3 minutes)",
        options.suite, options.mirror
    ));
    let out = tokio::process::Command::new(&debootstrap)
        .args([
            "--variant=minbase",
            &format!("--include={BASE_PACKAGES}"),
            &options.suite,
        ])
        .arg(&rootfs)
        .arg(&options.mirror)
        .output()
        .await
        .map_err(|e| format!("cannot run debootstrap: {e}"))?;
    if !out.status.success() {
        let tail: String = String::from_utf8_lossy(&out.stdout)
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(format!(
            "debootstrap failed ({}); it needs root and a reachable Debian mirror (--mirror).\n{tail}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // Package caches are dead weight in the image.
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        if let Ok(entries) = std::fs::read_dir(rootfs.join(dir)) {
            for e in entries.flatten() {
                if e.path().is_file() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    let tarball = work.path().join("rootfs.tar");
    let status = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .await
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if !status.success() {
        return Err(format!("tar of the root file system failed ({status})"));
    }
    log(&format!("{BASE_IMAGE}: importing"));
    import_rootfs(factory, &tarball, BASE_IMAGE, &key).await?;
    log(&format!("{BASE_IMAGE}: built"));
    Ok(true)
}

/// `docker import`: a root file system tarball becomes image `image`, labelled with `key`.
async fn import_rootfs(
    factory: &DockerFactory,
    tarball: &Path,
    image: &str,
    key: &str,
) -> Result<(), String> {
    let (repo, tag) = split_tag(image);
    let file = tokio::fs::File::open(tarball)
        .await
        .map_err(|e| format!("cannot open {}: {e}", tarball.display()))?;
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(vec![format!("LABEL {KEY_LABEL}={key}")])
        .build();
    let mut stream = factory
        .client()
        .create_image(Some(options), Some(body), None);
    let import = async {
        while let Some(item) = stream.next().await {
            item.map_err(|e| format!("docker import of {image} failed: {e}"))?;
        }
        Ok::<(), String>(())
    };
    tokio::time::timeout(Duration::from_secs(600), import)
        .await
        .map_err(|_| format!("docker import of {image} took over 10 minutes"))?
}

/// Builds the image of bundled repository `name` from the base (built first if missing or out
/// of date), unless it is there already, built from the same base and repository content.
pub async fn build_repo_image(
    factory: &DockerFactory,
    name: &str,
    image: &str,
    options: &BuildOptions,
    log: &(dyn Fn(&str) + Sync),
) -> Result<bool, String> {
    let key = repo_key(options, name)?;
    if !options.rebuild && current(factory, image, &key, log).await? {
        return Ok(false);
    }
    // The base as it is now (`trawl swe build-images --rebuild` has just rebuilt it).
    if !current(factory, BASE_IMAGE, &base_key(options), log).await? {
        build_base(factory, options, log).await?;
    }
    let src = tempfile::tempdir().map_err(|e| format!("cannot create a temporary folder: {e}"))?;
    let commit = repos::materialize(name, src.path())?;
    let tar = tar_dir(src.path(), TESTBED.trim_start_matches('/'))
        .map_err(|e| format!("cannot pack {name}: {e}"))?;
    let sandbox = factory
        .create(BASE_IMAGE, "/", "trawl-build-images")
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        sandbox.upload_tar("/", tar).await.map_err(|e| e.to_string())?;
        // The repository's own check: its tests pass at the base commit.
        let check = sandbox
            .exec(
                &format!(
                    "cd {TESTBED} && git rev-parse HEAD && python3 -m pytest -q -p no:cacheprovider 2>&1 | tail -3"
                ),
                &ExecLimits {
                    wall_time_secs: 300.0,
                    cpu_secs: 300,
                    ..ExecLimits::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        if !check.success() || !check.stdout.starts_with(&commit) {
            return Err(format!(
                "{image}: the repository is not right in the container ({}):\n{}{}",
                check.describe(),
                check.stdout,
                check.stderr
            ));
        }
        let (repo, tag) = split_tag(image);
        let labels = std::collections::HashMap::from([(KEY_LABEL.to_string(), key.clone())]);
        factory
            .commit_with_labels(&sandbox, repo, tag, TESTBED, labels)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    let _ = sandbox.close().await;
    result?;
    log(&format!("{image}: built ({name} at {})", &commit[..12]));
    Ok(true)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}
