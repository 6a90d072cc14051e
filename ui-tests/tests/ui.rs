//! Compile-time guarantees: every case in `fail/` must be rejected with the message in its
//! `.stderr` file, every case in `pass/` must compile. Regenerate expected output with
//! `TRYBUILD=overwrite cargo test -p goka-ui-tests` and review the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/pass/*.rs");
    cases.compile_fail("tests/fail/*.rs");
}

/// What every expected error must be like, checked on the `.stderr` files `ui` compares
/// against: one mistake gives at most 3 errors (a case with several says so in a
/// `// mistakes: N` line), the first points into the user's own file,
/// and no `help:` rewrites a line that holds an attribute (a suggestion there proposes code
/// inside `#[input(...)]` and the like, which the user could not write).
#[test]
fn expected_errors_are_few_point_at_the_user_and_never_rewrite_an_attribute() {
    let mut failures = Vec::new();
    let mut cases = 0;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fail");
    let entries = std::fs::read_dir(&dir).expect("tests/fail is readable");
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("stderr") {
            continue;
        }
        cases += 1;
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).expect("a readable .stderr");
        let source = std::fs::read_to_string(path.with_extension("rs")).expect("the case's .rs");
        failures.extend(problems(&name, &text, mistakes(&source)));
    }
    assert!(
        cases >= 40,
        "found only {cases} compile-fail cases in {}",
        dir.display()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// How many mistakes a case makes on purpose: 1 unless a `// mistakes: N` line says more.
fn mistakes(source: &str) -> usize {
    source
        .lines()
        .find_map(|l| l.trim().strip_prefix("// mistakes:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1)
}

fn problems(name: &str, text: &str, mistakes: usize) -> Vec<String> {
    let mut found = Vec::new();
    let errors = text.lines().filter(|l| l.starts_with("error")).count();
    if errors == 0 || errors > 3 * mistakes {
        found.push(format!(
            "{name}: {errors} errors for {mistakes} mistake(s), at most 3 each"
        ));
    }
    let case = name.trim_end_matches(".stderr");
    let first_location = text.lines().find(|l| l.trim_start().starts_with("--> "));
    if !first_location.is_some_and(|l| l.contains(&format!("tests/fail/{case}.rs"))) {
        found.push(format!(
            "{name}: the first error is not in the case's own file: {first_location:?}"
        ));
    }
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if rewrites_an_attribute(line, lines.get(i + 1).copied()) {
            found.push(format!(
                "{name}:{}: a suggestion rewrites an attribute: {line}",
                i + 1
            ));
        }
    }
    found
}

/// A suggestion shows the rewritten line either as a diff (`12 - old`, `12 + new`) or as the
/// new line with `+++`/`~~~` markers under it.
fn rewrites_an_attribute(line: &str, next: Option<&str>) -> bool {
    let Some((number, rest)) = line.trim_start().split_once(' ') else {
        return false;
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) || !rest.contains("#[") {
        return false;
    }
    let diff = rest.starts_with("- ") || rest.starts_with("+ ");
    let marked = rest.starts_with("| ")
        && next.is_some_and(|n| {
            let marks = n.trim_start().trim_start_matches('|').trim();
            !marks.is_empty() && marks.chars().all(|c| matches!(c, '+' | '~' | ' '))
        });
    diff || marked
}
