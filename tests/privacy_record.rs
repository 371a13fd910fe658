//! PRIVACY.md stays honest: every test it names as proof exists, and each of its numbered
//! sections names at least one, so the record cannot quietly lose its proofs.

use std::path::Path;

/// Every `` `tests/X.rs::name` `` or `` `src/X.rs::name` `` in `text`.
fn references(text: &str) -> Vec<(String, String)> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|quoted| {
            let (file, name) = quoted.split_once("::")?;
            let is_source = (file.starts_with("tests/") || file.starts_with("src/")) && file.ends_with(".rs");
            let is_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            (is_source && is_name).then(|| (file.to_string(), name.to_string()))
        })
        .collect()
}

#[test]
fn every_test_privacy_md_names_exists_and_every_section_names_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let record = std::fs::read_to_string(root.join("PRIVACY.md")).expect("PRIVACY.md");
    let all = references(&record);
    assert!(all.len() >= 20, "PRIVACY.md names {} proofs", all.len());
    let missing: Vec<String> = all
        .iter()
        .filter(|(file, name)| {
            let source = std::fs::read_to_string(root.join(file)).unwrap_or_default();
            !source.contains(&format!("fn {name}("))
        })
        .map(|(file, name)| format!("{file}::{name}"))
        .collect();
    assert!(missing.is_empty(), "PRIVACY.md names tests that do not exist: {missing:#?}");

    let sections: Vec<&str> =
        record.split("\n## ").skip(1).filter(|s| s.starts_with(|c: char| c.is_ascii_digit())).collect();
    assert_eq!(sections.len(), 6, "the six numbered sections");
    for section in sections {
        let title = section.lines().next().unwrap_or_default();
        assert!(!references(section).is_empty(), "section \"{title}\" names no test");
    }
}

#[test]
fn a_reference_is_read_only_in_its_exact_form() {
    let text = "see `tests/a.rs::b_c` and `src/x/y.rs::z`, not `tests/a.rs` nor `foo::bar` nor `tests/a.rs::b c`";
    assert_eq!(
        references(text),
        [("tests/a.rs".to_string(), "b_c".to_string()), ("src/x/y.rs".to_string(), "z".to_string())]
    );
}
