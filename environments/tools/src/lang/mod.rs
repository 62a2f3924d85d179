//! The little language a domain's tools are written in, so that a domain is data: a tool is a
//! list of steps over the JSON database, and a third party adds a domain with files alone.
//!
//! - **Values** are JSON. A string `"$name"` or `"$name.field.sub"` reads a variable (a
//!   parameter, an earlier `let`, or one of the domain's constants); `"$$x"` is the literal `"$x"`.
//!   An object with a single key that starts with `$` is an operator: `{"$add": [a, b]}`.
//!   Arrays and other objects are built element by element.
//! - **Steps**: `{"let": name, "be": value}`, `{"check": condition, "else": "message {var}"}`,
//!   `{"set": table, "id": value, "fields": {field: value}}`, `{"insert": table, "id": value,
//!   "record": value}`, `{"delete": table, "id": value}` and `{"return": value}`.
//! - **A tool call is all or nothing**: a failed check or lookup answers `Error: ...` and leaves
//!   the database as it was.

mod ast;
mod check;
mod date;
mod eval;
mod parse;
mod text;

pub use ast::{Expr, Op, Scope, Step};
pub use check::check_steps;
pub use eval::run;
pub use parse::{parse_expr, parse_step};
pub use text::{fill, same, text_of};

#[cfg(test)]
mod tests;
