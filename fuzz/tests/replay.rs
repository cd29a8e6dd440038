//! Replays every file of `corpus/<target>/` through its target body, on stable and without
//! libFuzzer: the seeds from tests/vectors, and every input that once crashed a target (kept as a
//! regression seed after the fix). `tools/fuzz.sh replay` runs this in CI.
//!
//! One test, targets one after another: the memory-bound assertions count the heap of the whole
//! process, so nothing else may run meanwhile.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

#[test]
fn every_corpus_file_passes_its_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut failures = Vec::new();
    for (name, target) in e2ebackup_fuzz::TARGETS {
        let dir = corpus.join(name);
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{name}: the corpus is empty");
        for file in &files {
            let data = fs::read(file).expect("readable corpus file");
            if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                failures.push(file.display().to_string());
            }
        }
        eprintln!("{name}: {} inputs", files.len());
    }
    assert!(
        failures.is_empty(),
        "these inputs fail their target: {failures:#?}"
    );
}
