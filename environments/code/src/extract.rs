//! Pulling the program out of a model's reply: fenced code blocks (closed or not), the block
//! that defines the function asked for, and HumanEval-style completions of a given prompt.

pub use trawl_core::actions::code_blocks;

fn defines(code: &str, name: &str) -> bool {
    code.lines().any(|l| {
        let l = l.trim_start();
        l.strip_prefix("def ")
            .or_else(|| l.strip_prefix("async def "))
            .is_some_and(|rest| {
                rest.strip_prefix(name)
                    .is_some_and(|r| r.trim_start().starts_with('('))
            })
    })
}

/// The program a reply proposes. `entry_point` is the function the tests call; `prompt`, when
/// given, is a HumanEval-style signature and docstring that a bare function body completes.
pub fn extract_program(reply: &str, entry_point: Option<&str>, prompt: Option<&str>) -> String {
    let blocks = code_blocks(reply);
    let code = if blocks.is_empty() {
        reply.to_string()
    } else {
        let pick = entry_point
            .and_then(|e| blocks.iter().rev().find(|b| defines(b, e)))
            .or_else(|| blocks.iter().rev().find(|b| b.contains("def ")))
            .or_else(|| blocks.last());
        pick.cloned().unwrap_or_default()
    };
    let code = code.trim_matches('\n').to_string();
    match (entry_point, prompt) {
        (Some(e), Some(p)) if !defines(&code, e) && defines(p, e) => {
            // A completion of the prompt's body.
            let mut program = p.to_string();
            if !program.ends_with('\n') {
                program.push('\n');
            }
            program.push_str(&code);
            program.push('\n');
            program
        }
        (_, Some(p)) => {
            // The prompt's imports (`from typing import List`) are part of the problem.
            let mut program = String::new();
            for line in p.lines() {
                let t = line.trim_start();
                if line == t
                    && (t.starts_with("import ") || t.starts_with("from "))
                    && !code.contains(t)
                {
                    program.push_str(line);
                    program.push('\n');
                }
            }
            program.push_str(&code);
            program.push('\n');
            program
        }
        _ => format!("{code}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn picks_the_block_that_defines_the_function() {
        let reply = "First a helper:\n```python\nx = 1\n```\nThen:\n```python\ndef add(a, b):\n    return a + b\n```\nDone.";
        assert_eq!(
            extract_program(reply, Some("add"), None),
            "def add(a, b):\n    return a + b\n"
        );
    }

    #[test]
    fn an_unclosed_fence_runs_to_the_end() {
        let reply = "```py\ndef f():\n    return 1";
        assert_eq!(
            extract_program(reply, Some("f"), None),
            "def f():\n    return 1\n"
        );
    }

    #[test]
    fn a_body_completes_the_prompt_and_prompt_imports_are_kept() {
        let prompt =
            "from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n";
        let body = "    return sum(xs)";
        assert_eq!(
            extract_program(body, Some("total"), Some(prompt)),
            format!("{prompt}    return sum(xs)\n")
        );
        let whole = "```python\ndef total(xs):\n    return sum(xs)\n```";
        assert_eq!(
            extract_program(whole, Some("total"), Some(prompt)),
            "from typing import List\ndef total(xs):\n    return sum(xs)\n"
        );
    }

    proptest! {
        #[test]
        fn fenced_code_comes_back_verbatim(code in "[a-z =+()\n]{0,80}", lead in "[A-Za-z .]{0,30}") {
            prop_assume!(!code.contains("```"));
            let reply = format!("{lead}\n```python\n{code}```\ntrailing words");
            let blocks = code_blocks(&reply);
            prop_assert_eq!(blocks, vec![code]);
        }

        #[test]
        fn extraction_never_panics(reply in "\\PC{0,200}") {
            let _ = extract_program(&reply, Some("f"), Some("def f(x):\n"));
        }
    }
}
