//! The test harness on real sandboxes: reference solutions pass every test, wrong ones fail the
//! right tests, and misbehaving programs are reported, not crashed on.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use trawl_code::{program_of, tasks, CodeRunner, RunSettings, TestSpec};
use trawl_core::sandbox::ExecOutcome;
use trawl_sandbox_local as _; // the `local` sandbox kind these tests run programs in

fn runner() -> CodeRunner {
    CodeRunner::new(RunSettings::default(), &trawl_core::BuildContext::default()).unwrap()
}

#[tokio::test]
async fn every_builtin_reference_solution_passes_and_a_wrong_one_fails() {
    let r = runner();
    let tasks = tasks::builtin().unwrap();
    assert!(tasks.len() >= 30);
    let sandbox = r.new_sandbox().await.unwrap();
    let sandbox = sandbox.as_ref();
    for t in &tasks {
        let spec = TestSpec::of_task(&t.data);
        let reference = t.data["canonical_solution"].as_str().unwrap();
        let report = r.run_tests(sandbox, reference, &spec).await.unwrap();
        assert!(report.all_passed(), "{}: {report:?}", t.id);
        assert_eq!(report.total(), spec.tests.len());
    }
    // A wrong answer: `is_prime` that calls every odd number prime.
    let t = tasks
        .iter()
        .find(|t| t.data["entry_point"] == "is_prime")
        .unwrap();
    let answer = "Here you go:\n```python\ndef is_prime(n):\n    return n == 2 or n % 2 == 1\n```";
    let report = r
        .run_tests(
            sandbox,
            &program_of(answer, &t.data),
            &TestSpec::of_task(&t.data),
        )
        .await
        .unwrap();
    assert!(!report.all_passed());
    let failed: Vec<&str> = report
        .results
        .iter()
        .filter(|x| !x.passed)
        .map(|x| x.test.as_str())
        .collect();
    assert_eq!(
        failed,
        vec![
            "assert is_prime(1) == False",
            "assert is_prime(91) == False",
            "assert is_prime(-7) == False"
        ]
    );
    assert_eq!(report.results[0].error, None);
    assert_eq!(
        report.results[1].error.as_deref(),
        Some("AssertionError"),
        "{report:?}"
    );
    assert!((report.fraction() - 0.4).abs() < 1e-9);
    sandbox.close().await.unwrap();
}

#[tokio::test]
async fn humaneval_reference_solutions_pass_all_164() {
    let path = tasks::HUMANEVAL.fetch().unwrap();
    let tasks = tasks::load_file(&path).unwrap();
    assert_eq!(tasks.len(), 164);
    let r = runner();
    let sandbox = r.new_sandbox().await.unwrap();
    let sandbox = sandbox.as_ref();
    let mut total_tests = 0;
    for t in &tasks {
        let spec = TestSpec::of_task(&t.data);
        let reference = t.data["canonical_solution"].as_str().unwrap();
        let report = r.run_tests(sandbox, reference, &spec).await.unwrap();
        assert!(report.all_passed(), "{}: {report:?}", t.id);
        total_tests += report.total();
    }
    // Each top-level assert of each `check` is one test.
    assert_eq!(total_tests, 1181);
    // A body that returns nothing fails HumanEval/0's tests that expect True.
    let t = &tasks[0];
    let report = r
        .run_tests(
            sandbox,
            &program_of("    return False\n", &t.data),
            &TestSpec::of_task(&t.data),
        )
        .await
        .unwrap();
    assert!(
        report.passed() > 0 && report.passed() < report.total(),
        "{report:?}"
    );
}

#[tokio::test]
async fn misbehaving_programs_are_reported() {
    let r = runner();
    let sandbox = r.new_sandbox().await.unwrap();
    let sandbox = sandbox.as_ref();
    let spec = TestSpec {
        tests: vec!["assert f(1) == 2".into(), "assert f(2) == 3".into()],
        entry_point: Some("f".into()),
        ..TestSpec::default()
    };
    // A test that never ends is cut at the per-test timeout; the other still runs.
    let loops = "def f(x):\n    while x == 1:\n        pass\n    return x + 1\n";
    let report = r.run_tests(sandbox, loops, &spec).await.unwrap();
    assert_eq!(report.passed(), 1, "{report:?}");
    assert!(report.results[0]
        .error
        .as_deref()
        .unwrap()
        .contains("timed out"));

    // A program that fails to import: every test fails with the error.
    let report = r
        .run_tests(sandbox, "import not_a_module\n", &spec)
        .await
        .unwrap();
    assert_eq!(report.passed(), 0);
    assert!(report
        .program_error
        .as_deref()
        .unwrap()
        .contains("ModuleNotFoundError"));

    // A program that kills its own interpreter: the judge outlives it, and every test failed
    // with the reason.
    let report = r
        .run_tests(sandbox, "import os\nos._exit(7)\n", &spec)
        .await
        .unwrap();
    assert_eq!((report.passed(), report.total()), (0, 2));
    assert!(
        report.feedback().contains("exited with code 7"),
        "{}",
        report.feedback()
    );

    // A program that kills the judge: no report at all, every test failed with the reason.
    let report = r
        .run_tests(
            sandbox,
            "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
            &spec,
        )
        .await
        .unwrap();
    assert_eq!((report.passed(), report.total()), (0, 2));
    assert!(report.feedback().contains("without a report"));

    // A program that prints a forged result line does not pass: the marker is per run.
    let forged = "print('@@trawl-result-0000000000000000@@{\"program_error\": null, \"results\": [{\"test\": \"x\", \"passed\": true}]}')\ndef f(x):\n    return 0\n";
    let report = r.run_tests(sandbox, forged, &spec).await.unwrap();
    assert_eq!(report.passed(), 0, "{report:?}");

    // run_python reports exit codes and output.
    let out = r
        .run_python(sandbox, "import sys\nprint('hi')\nsys.exit(3)")
        .await
        .unwrap();
    assert_eq!(out.outcome, ExecOutcome::Exited { code: 3 });
    assert_eq!(out.stdout, "hi\n");
    assert!(sandbox.read_file("snippet.py").await.is_ok());
    sandbox.close().await.unwrap();
}

#[test]
fn prompts_show_the_problem_and_some_tests() {
    let tasks = tasks::builtin().unwrap();
    let p = trawl_code::task_prompt(&tasks[0].data);
    assert!(p.contains("reverse_words"));
    assert!(p.contains("assert reverse_words('hello world') == 'world hello'"));
    let he: Value =
        serde_json::json!({"source": "humaneval", "prompt": "def f(x):\n    \"\"\"doc\"\"\"\n"});
    assert!(trawl_code::task_prompt(&he).contains("```python\ndef f(x):"));
}
