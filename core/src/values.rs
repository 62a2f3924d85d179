//! Checks of the plain values settings hold, shared by every config section and component:
//! durations in seconds, fractions, and names that become one file or folder name. The bottom
//! floor of core: it imports nothing of trawl.

/// The longest time any setting may ask for: a year. Longer is a typo, and `inf` would overflow
/// the clock.
pub const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Seconds from a setting as a `Duration`, never panicking: NaN and negatives are zero, and
/// anything past [`MAX_SECS`] (`inf` included) is `MAX_SECS`. Settings are checked with
/// [`check_secs`] when they load; this keeps a value that slipped past from crashing a run.
pub fn secs(value: f64) -> std::time::Duration {
    if value.is_nan() {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::from_secs_f64(value.clamp(0.0, MAX_SECS))
}

/// Checks a number of seconds from a setting: finite, at most [`MAX_SECS`], not negative, and
/// above zero unless `zero_ok`. The error says what is allowed.
pub fn check_secs(value: f64, zero_ok: bool) -> Result<(), String> {
    let low_ok = if zero_ok { value >= 0.0 } else { value > 0.0 };
    if value.is_finite() && low_ok && value <= MAX_SECS {
        return Ok(());
    }
    let low = if zero_ok { "0" } else { "above 0" };
    Err(format!(
        "must be a number of seconds from {low} to {MAX_SECS} (a year); got {value}"
    ))
}

/// Checks a fraction from a setting: finite and within `[0, 1]`.
pub fn check_fraction(value: f64) -> Result<(), String> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(format!("must be a number from 0 to 1; got {value}"))
    }
}

/// Checks that `part` (a task id, a model's or a run's name) can be one file or folder name as
/// it is: not empty, not `.` or `..`, without `/` and NUL. Commands that file things by these
/// names (`trawl swe reports` writes `<model>/<instance id>/report.json`, a run goes to
/// `runs/<name>`) check them with this, so that no name reaches outside the folder it is filed
/// under. The error says what is wrong, for the caller to place (file, line, field).
pub fn check_path_part(part: &str) -> Result<(), String> {
    if part.contains('/') {
        return Err("contains `/`: it becomes one file or folder name".into());
    }
    check_relative_path(part)
}

/// Checks that `path` (a task id such as `HumanEval/0`) stays inside any folder it is joined
/// to: not empty, not absolute, no NUL, and no part that is empty, `.` or `..`.
pub fn check_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("is empty".into());
    }
    if path.contains('\0') {
        return Err("contains a NUL character".into());
    }
    if path.starts_with('/') {
        return Err("is an absolute path: it becomes part of file paths, which must stay inside their folder".into());
    }
    if let Some(p) = path
        .split('/')
        .find(|p| p.is_empty() || *p == "." || *p == "..")
    {
        let what = if p.is_empty() {
            "an empty part (`//` or a trailing `/`)".to_string()
        } else {
            format!("a `{p}` part")
        };
        return Err(format!(
            "has {what}: it becomes part of file paths, which must stay inside their folder"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_leave_their_folder_are_refused() {
        for ok in ["a", "django__django-11099", "x..y", ".hidden", "Model 7B"] {
            assert_eq!(check_path_part(ok), Ok(()), "{ok}");
            assert_eq!(check_relative_path(ok), Ok(()), "{ok}");
        }
        for ok in ["HumanEval/0", "test/algebra/1.json"] {
            assert_eq!(check_relative_path(ok), Ok(()), "{ok}");
            assert!(check_path_part(ok).unwrap_err().contains("`/`"), "{ok}");
        }
        for (bad, why) in [
            ("", "is empty"),
            (".", "`.` part"),
            ("..", "`..` part"),
            ("../../escape", "`..` part"),
            ("a/../../b", "`..` part"),
            ("/etc/passwd", "absolute path"),
            ("a//b", "empty part"),
            ("a/", "empty part"),
            ("a\0b", "NUL"),
        ] {
            let err = check_relative_path(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(check_path_part(bad).is_err(), "{bad:?}");
        }
    }
}
