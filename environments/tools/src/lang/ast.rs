//! The language's syntax tree: expressions, their operators (with names and arities), the
//! steps of a tool, and the scope of variables a call runs in.

use serde_json::{Map, Value};

/// An expression over the tool's scope and the database.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Value),
    Var {
        name: String,
        path: Vec<String>,
    },
    Array(Vec<Expr>),
    Object(Vec<(String, Expr)>),
    Op(Op, Vec<Expr>),
    /// `{"$get": [table, id]}`: the record, or the call fails.
    Get(String, Box<Expr>),
    /// `{"$find": [table, {field: value, ...}]}`: the records whose fields equal those values.
    Find(String, Vec<(String, Expr)>),
    /// `{"$search": [table, [fields], text]}`: the records where any of the fields contains the
    /// text, case-insensitively.
    Search(String, Vec<String>, Box<Expr>),
    /// `{"$new_id": [table, prefix]}`: the prefix and the next free number, so that replaying
    /// the same calls gives the same ids.
    NewId(String, String),
    /// `{"$pick": [value, [fields]]}`: only those fields of a record (or of each record).
    Pick(Box<Expr>, Vec<String>),
}

/// Operators over evaluated arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Min,
    Max,
    Round,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Not,
    If,
    In,
    Len,
    Append,
    Remove,
    Concat,
    Sum,
    AddDays,
    DaysBetween,
}

impl Op {
    /// Name and arity (`None`: any number, at least one).
    pub(super) const ALL: [(&'static str, Op, Option<usize>); 24] = [
        ("$add", Op::Add, Some(2)),
        ("$sub", Op::Sub, Some(2)),
        ("$mul", Op::Mul, Some(2)),
        ("$min", Op::Min, Some(2)),
        ("$max", Op::Max, Some(2)),
        ("$round", Op::Round, Some(2)),
        ("$eq", Op::Eq, Some(2)),
        ("$ne", Op::Ne, Some(2)),
        ("$lt", Op::Lt, Some(2)),
        ("$le", Op::Le, Some(2)),
        ("$gt", Op::Gt, Some(2)),
        ("$ge", Op::Ge, Some(2)),
        ("$and", Op::And, None),
        ("$or", Op::Or, None),
        ("$not", Op::Not, Some(1)),
        ("$if", Op::If, Some(3)),
        ("$in", Op::In, Some(2)),
        ("$len", Op::Len, Some(1)),
        ("$append", Op::Append, Some(2)),
        ("$remove", Op::Remove, Some(2)),
        ("$concat", Op::Concat, None),
        ("$sum", Op::Sum, Some(2)),
        ("$add_days", Op::AddDays, Some(2)),
        ("$days_between", Op::DaysBetween, Some(2)),
    ];
}

/// The special forms, for the list of known operators in errors.
pub(super) const FORMS: [&str; 5] = ["$get", "$find", "$search", "$new_id", "$pick"];

/// One step of a tool.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Let(String, Expr),
    /// The condition, and the message when it is false (with `{var.path}` placeholders).
    Check(Expr, String),
    Set {
        table: String,
        id: Expr,
        fields: Vec<(String, Expr)>,
    },
    Insert {
        table: String,
        id: Expr,
        record: Expr,
    },
    Delete {
        table: String,
        id: Expr,
    },
    Return(Expr),
}

impl Step {
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Step::Set { .. } | Step::Insert { .. } | Step::Delete { .. }
        )
    }
}

/// Variables in scope during a call.
pub type Scope = Map<String, Value>;
