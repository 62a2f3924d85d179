//! The repositories behind the bundled instances: small Python packages with tests, compiled
//! into trawl and turned into git repositories with one commit whose id is the same on every
//! machine (fixed author, committer and dates), so that instances can name it as `base_commit`.

use std::path::Path;
use std::process::Command;

/// The owner every bundled repository is filed under (`trawl-bench/textkit`).
pub const OWNER: &str = "trawl-bench";

/// (repository, path, contents) of every bundled file.
const FILES: &[(&str, &str, &str)] = &[
    (
        "intervals",
        "README.md",
        include_str!("../repos/intervals/README.md"),
    ),
    (
        "intervals",
        "intervals/__init__.py",
        include_str!("../repos/intervals/intervals/__init__.py"),
    ),
    (
        "intervals",
        "intervals/core.py",
        include_str!("../repos/intervals/intervals/core.py"),
    ),
    (
        "intervals",
        "intervals/parse.py",
        include_str!("../repos/intervals/intervals/parse.py"),
    ),
    (
        "intervals",
        "tests/test_core.py",
        include_str!("../repos/intervals/tests/test_core.py"),
    ),
    (
        "intervals",
        "tests/test_parse.py",
        include_str!("../repos/intervals/tests/test_parse.py"),
    ),
    (
        "ledger",
        "README.md",
        include_str!("../repos/ledger/README.md"),
    ),
    (
        "ledger",
        "ledger/__init__.py",
        include_str!("../repos/ledger/ledger/__init__.py"),
    ),
    (
        "ledger",
        "ledger/book.py",
        include_str!("../repos/ledger/ledger/book.py"),
    ),
    (
        "ledger",
        "ledger/money.py",
        include_str!("../repos/ledger/ledger/money.py"),
    ),
    (
        "ledger",
        "tests/test_book.py",
        include_str!("../repos/ledger/tests/test_book.py"),
    ),
    (
        "ledger",
        "tests/test_money.py",
        include_str!("../repos/ledger/tests/test_money.py"),
    ),
    (
        "textkit",
        "README.md",
        include_str!("../repos/textkit/README.md"),
    ),
    (
        "textkit",
        "tests/test_case.py",
        include_str!("../repos/textkit/tests/test_case.py"),
    ),
    (
        "textkit",
        "tests/test_slug.py",
        include_str!("../repos/textkit/tests/test_slug.py"),
    ),
    (
        "textkit",
        "tests/test_wrap.py",
        include_str!("../repos/textkit/tests/test_wrap.py"),
    ),
    (
        "textkit",
        "textkit/__init__.py",
        include_str!("../repos/textkit/textkit/__init__.py"),
    ),
    (
        "textkit",
        "textkit/case.py",
        include_str!("../repos/textkit/textkit/case.py"),
    ),
    (
        "textkit",
        "textkit/slug.py",
        include_str!("../repos/textkit/textkit/slug.py"),
    ),
    (
        "textkit",
        "textkit/wrap.py",
        include_str!("../repos/textkit/textkit/wrap.py"),
    ),
];

/// Names of the bundled repositories.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<&str> = FILES.iter().map(|(r, _, _)| *r).collect();
    names.dedup();
    names
}

/// The bundled repository for `repo` (`trawl-bench/NAME` or `NAME`), if there is one.
pub fn bundled(repo: &str) -> Option<&'static str> {
    let name = repo
        .strip_prefix(OWNER)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(repo);
    names().into_iter().find(|n| *n == name)
}

/// The environment git runs with, so that commits are byte-identical everywhere.
pub fn git_identity() -> [(&'static str, &'static str); 6] {
    [
        ("GIT_AUTHOR_NAME", "trawl"),
        ("GIT_AUTHOR_EMAIL", "trawl@localhost"),
        ("GIT_AUTHOR_DATE", "2026-01-01T00:00:00+00:00"),
        ("GIT_COMMITTER_NAME", "trawl"),
        ("GIT_COMMITTER_EMAIL", "trawl@localhost"),
        ("GIT_COMMITTER_DATE", "2026-01-01T00:00:00+00:00"),
    ]
}

fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .envs(git_identity())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .map_err(|e| format!("cannot run git (is it installed? `apt-get install -y git`): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {} failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Writes bundled repository `name` into the empty or missing folder `dest` as a git
/// repository with one commit, and returns the commit id.
pub fn materialize(name: &str, dest: &Path) -> Result<String, String> {
    let mut any = false;
    for (repo, path, contents) in FILES.iter().filter(|(r, _, _)| *r == name) {
        let _ = repo;
        let p = dest.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&p, contents).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        any = true;
    }
    if !any {
        return Err(format!("there is no bundled repository named `{name}`"));
    }
    git(dest, &["init", "-q", "-b", "main"])?;
    git(dest, &["add", "-A"])?;
    git(
        dest,
        &["commit", "-q", "-m", &format!("{name}: initial commit")],
    )?;
    git(dest, &["rev-parse", "HEAD"])
}

/// A key of bundled repository `name`'s content (SHA-256 of its files' paths and bytes): what
/// an image holding it was built from, so that a changed repository gets a new image.
pub fn content_key(name: &str) -> Result<String, String> {
    let mut all = Vec::new();
    for (_, path, contents) in FILES.iter().filter(|(r, _, _)| *r == name) {
        for part in [path.as_bytes(), b"\0", contents.as_bytes(), b"\0"] {
            all.extend_from_slice(part);
        }
    }
    if all.is_empty() {
        return Err(format!("there is no bundled repository named `{name}`"));
    }
    Ok(trawl_core::fetch::sha256_hex(&all))
}

/// The bundled repository `name` as a git repository under trawl's cache
/// (`$TRAWL_HOME/swe/repos/trawl-bench__NAME`), made on first use. Returns its folder.
pub fn cached(name: &str) -> Result<std::path::PathBuf, String> {
    let dir = trawl_core::fetch::trawl_home()
        .join("swe")
        .join("repos")
        .join(format!("{OWNER}__{name}"));
    if dir.join(".git").exists() {
        return Ok(dir);
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    // Built aside and renamed into place, so that a crash never leaves half a repository.
    let tmp = tempfile::Builder::new()
        .prefix(".building-")
        .tempdir_in(parent)
        .map_err(|e| format!("cannot create a folder in {}: {e}", parent.display()))?;
    materialize(name, tmp.path())?;
    let built = tmp.keep();
    if let Err(e) = std::fs::rename(&built, &dir) {
        let _ = std::fs::remove_dir_all(&built);
        if !dir.join(".git").exists() {
            return Err(format!(
                "cannot move the repository into {}: {e}",
                dir.display()
            ));
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_repositories_have_the_commit_their_instances_name() {
        let instances = crate::instance::builtin();
        for name in names() {
            let dir = tempfile::tempdir().expect("tempdir");
            let commit = materialize(name, dir.path()).expect("materialize");
            let users: Vec<_> = instances
                .iter()
                .filter(|i| bundled(&i.repo) == Some(name))
                .collect();
            assert!(!users.is_empty(), "{name} has no instance");
            for i in users {
                assert_eq!(i.base_commit, commit, "{}", i.instance_id);
            }
        }
    }
}
