//! The bodies of e2ebackup's fuzz targets, as plain functions: `fuzz_targets/*.rs` hand them to
//! libFuzzer (nightly, `cargo fuzz`), and `tests/replay.rs` runs every file of `corpus/<target>/`
//! through them on stable, so CI replays the corpus without a fuzzer (docs/FUZZING.md).
//!
//! Each target is deterministic for a given input (the OPAQUE client's blinding is the one
//! exception: it comes from the OS random number generator inside the core), never reads
//! files, and asserts invariants rather than only "does not crash": garbage is refused with the
//! right error, round trips return their input, tampering is detected, memory stays bounded.

mod alloc;
mod blob;
mod cdc;
mod chunked;
mod input;
mod keyslot;
mod opaque;
mod recipient;
mod whatsapp;

pub use alloc::peak_allocated_during;
pub use blob::blob_open;
pub use cdc::cdc_chunker;
pub use chunked::{chunked_decrypt, chunked_stream};
pub use input::Input;
pub use keyslot::keyslot_unwrap;
pub use opaque::opaque_messages;
pub use recipient::recipient_decapsulate;
pub use whatsapp::{crypt15_decrypt, crypt15_prefix};

/// A target's body: takes one input, panics on a finding.
pub type Target = fn(&[u8]);

/// Every target by the name of its `fuzz_targets/` binary and `corpus/` folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("chunked_decrypt", chunked_decrypt),
    ("chunked_stream", chunked_stream),
    ("keyslot_unwrap", keyslot_unwrap),
    ("blob_open", blob_open),
    ("cdc_chunker", cdc_chunker),
    ("crypt15_prefix", crypt15_prefix),
    ("crypt15_decrypt", crypt15_decrypt),
    ("opaque_messages", opaque_messages),
    ("recipient_decapsulate", recipient_decapsulate),
];
