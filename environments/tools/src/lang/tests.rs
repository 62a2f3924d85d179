//! Unit tests of the tools language: all-or-nothing writes, operators and their errors, the
//! static checks, and dates.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::date::{format_date, parse_date};
use super::eval::eval;
use super::*;

fn steps(v: Value) -> Vec<Step> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| parse_step(s).unwrap())
        .collect()
}

fn scope(v: Value) -> Scope {
    v.as_object().unwrap().clone()
}

#[test]
fn a_write_applies_whole_or_not_at_all() {
    let mut db = json!({"books": {"B1": {"copies": 1}}, "loans": {}});
    let tool = steps(json!([
        {"let": "b", "be": {"$get": ["books", "$book"]}},
        {"check": {"$gt": ["$b.copies", 0]}, "else": "no copies of {b.title} left"},
        {"set": "books", "id": "$book", "fields": {"copies": {"$sub": ["$b.copies", 1]}}},
        {"let": "id", "be": {"$new_id": ["loans", "L"]}},
        {"insert": "loans", "id": "$id", "record": {"book": "$book", "due": {"$add_days": ["$today", 21]}}},
        {"return": {"$get": ["loans", "$id"]}}
    ]));
    let sc = scope(json!({"book": "B1", "today": "2026-02-20"}));
    let out = run(&tool, sc.clone(), &mut db).unwrap();
    assert_eq!(out, json!({"book": "B1", "due": "2026-03-13"}));
    assert_eq!(db["books"]["B1"]["copies"], 0);
    assert!(db["loans"]["L001"].is_object());
    let before = db.clone();
    let err = run(&tool, sc, &mut db).unwrap_err();
    assert_eq!(err, "no copies of null left");
    assert_eq!(db, before);
    let err = run(&tool, scope(json!({"book": "B9", "today": "x"})), &mut db).unwrap_err();
    assert_eq!(err, "`B9` not found in books");
}

#[test]
fn operators_and_errors() {
    let db = json!({"t": {"a": {"n": "Ann Lee", "x": 2}, "b": {"n": "Bo", "x": 3.5}}});
    let e = |v: Value| eval(&parse_expr(&v).unwrap(), &Scope::new(), &db);
    assert_eq!(e(json!({"$add": [1, 2]})).unwrap(), json!(3));
    assert_eq!(e(json!({"$sub": [1.5, 0.25]})).unwrap(), json!(1.25));
    assert_eq!(e(json!({"$eq": [1, 1.0]})).unwrap(), json!(true));
    assert_eq!(
        e(json!({"$sum": [{"$find": ["t", {}]}, "x"]})).unwrap(),
        json!(5.5)
    );
    assert_eq!(
        e(json!({"$pick": [{"$search": ["t", ["n"], "lee"]}, ["x"]]})).unwrap(),
        json!([{"x": 2}])
    );
    assert_eq!(
        e(json!({"$days_between": ["2024-02-27", "2024-03-02"]})).unwrap(),
        json!(4)
    );
    assert_eq!(
        e(json!({"$round": [{"$mul": [0.25, 3]}, 2]})).unwrap(),
        json!(0.75)
    );
    assert_eq!(e(json!("$$literal")).unwrap(), json!("$literal"));
    assert!(e(json!({"$lt": ["a", 1]}))
        .unwrap_err()
        .contains("cannot order"));
    assert!(e(json!({"$and": [1]}))
        .unwrap_err()
        .contains("true or false"));
    assert!(parse_expr(&json!({"$plus": [1, 2]}))
        .unwrap_err()
        .starts_with("unknown operator `$plus`"));
    assert_eq!(
        parse_expr(&json!({"$add": [1]})).unwrap_err(),
        "`$add` takes an array of 2 arguments"
    );
    assert!(parse_step(&json!({"set": "t", "id": "a", "feilds": {}}))
        .unwrap_err()
        .contains("unexpected key `feilds`"));
}

#[test]
fn static_checks_find_undefined_names_tables_and_writes_in_read_tools() {
    let tables: BTreeSet<String> = ["books".to_string()].into();
    let defined: BTreeSet<String> = ["book".to_string()].into();
    let s = steps(json!([{"let": "b", "be": {"$get": ["books", "$book"]}}, {"return": "$bk"}]));
    assert_eq!(
        check_steps(&s, defined.clone(), &tables, false).unwrap_err(),
        "steps[1]: `$bk` is not a parameter, an earlier `let` or a constant"
    );
    let s = steps(json!([{"delete": "books", "id": "$book"}]));
    assert!(check_steps(&s, defined.clone(), &tables, true)
        .unwrap_err()
        .contains("kind \"read\""));
    let s = steps(json!([{"return": {"$get": ["bookz", "$book"]}}]));
    assert!(check_steps(&s, defined, &tables, false)
        .unwrap_err()
        .contains("no table `bookz`"));
}

proptest! {
    #[test]
    fn dates_round_trip(days in -100_000i64..100_000) {
        let s = format_date(days);
        prop_assert_eq!(parse_date(&Value::String(s)).unwrap(), days);
    }
}
