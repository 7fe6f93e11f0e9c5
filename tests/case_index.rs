//! Keeps tests/CASES.md and the tests named after its cases in step: every test function
//! named `bNN_<what>` has a `## BNN` section in tests/CASES.md and a doc comment pointing at
//! `tests/CASES.md#bNN`, and every section is used by some test. Reads the sources; starts
//! no server.

use std::collections::BTreeSet;
use std::path::Path;

/// The test files (`tests/*.rs`) as (file name, text).
fn test_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// `Some("b07")` for a line `fn b07_<what>(`: the case a test function is named after.
fn case_of(line: &str) -> Option<String> {
    let name = line.strip_prefix("fn b")?;
    let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
    let rest = &name[digits.len()..];
    (digits.len() == 2 && rest.starts_with('_')).then(|| format!("b{digits}"))
}

#[test]
fn every_case_test_points_at_its_section() {
    let index =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/CASES.md"))
            .expect("tests/CASES.md");
    let sections: BTreeSet<String> = index
        .lines()
        .filter_map(|l| l.strip_prefix("## B"))
        .map(|n| format!("b{}", n.trim()))
        .collect();
    let mut used = BTreeSet::new();
    let mut faults = Vec::new();
    for (file, text) in test_files() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(case) = case_of(line) else { continue };
            let doc: Vec<&str> = lines[..i]
                .iter()
                .rev()
                .skip_while(|l| l.starts_with("#["))
                .take_while(|l| l.starts_with("///") || l.starts_with("#["))
                .copied()
                .collect();
            let pointer = format!("tests/CASES.md#{case}");
            if !doc.iter().any(|l| l.contains(&pointer)) {
                faults.push(format!("{file}:{}: no `{pointer}` in its doc", i + 1));
            }
            if !sections.contains(&case) {
                faults.push(format!(
                    "{file}:{}: no `## {}` in tests/CASES.md",
                    i + 1,
                    case.to_uppercase()
                ));
            }
            used.insert(case);
        }
    }
    for s in sections.difference(&used) {
        faults.push(format!("tests/CASES.md: section {s} is used by no test"));
    }
    assert!(faults.is_empty(), "{}", faults.join("\n"));
    assert!(
        used.len() >= 15,
        "only {} cases found: {used:?}",
        used.len()
    );
}
