// Programs that run into a limit, catch the failure and exit 0 (issue 32), brought into the
// sandbox and environment tests with `include!`: a fork bomb that stops at its first refused
// fork, an allocation loop that catches `MemoryError`, a writer that fills `/tmp` or
// `/dev/shm` until `ENOSPC`, and 100 files of 32 MiB (each under the file-size limit). Each is
// (what, the program, its argument, the limit it runs into).
const CAUGHT: [(&str, &str, &str, Limit); 5] = [
    (
        "fork bomb",
        include_str!("fork_bomb.py"),
        "",
        Limit::Processes,
    ),
    ("memory", include_str!("memory.py"), "", Limit::Memory),
    ("/tmp", include_str!("fill.py"), "/tmp", Limit::Disk),
    ("/dev/shm", include_str!("fill.py"), "/dev/shm", Limit::Disk),
    (
        "many files",
        include_str!("many_files.py"),
        "",
        Limit::Disk,
    ),
];
