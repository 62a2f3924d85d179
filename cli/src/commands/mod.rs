//! A module per command of the `trawl` command line; `main` dispatches to them.

pub mod check;
pub mod diff;
pub mod export;
pub mod plugins;
pub mod quickstart;
pub mod report;
pub mod run;
pub mod show;
pub mod stats;
pub mod swe;
pub mod view;
