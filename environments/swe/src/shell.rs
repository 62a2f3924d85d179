//! Shell and git text as trawl runs it inside sandboxes: the git invocation, the reset script,
//! quoting a word, and the end of a command's output.

/// The folder, inside the working copy, where trawl puts its patch files for a moment.
pub(crate) const SCRATCH: &str = ".trawl-scratch";

/// git as trawl runs it inside sandboxes: a fixed identity, no hooks, no pager.
pub(crate) const GIT: &str = "git -c user.name=trawl -c user.email=trawl@localhost -c core.hooksPath=/dev/null -c core.pager=cat";

pub(crate) fn reset_script(commit: &str) -> String {
    format!(
        "{GIT} reset -q --hard {c}\n{GIT} clean -qfdx -e {SCRATCH}\n",
        c = quote(commit)
    )
}

/// `s` as one shell word.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub(crate) fn tail(s: &str, n: usize) -> &str {
    let mut from = s.len().saturating_sub(n);
    while !s.is_char_boundary(from) {
        from += 1;
    }
    &s[from..]
}
