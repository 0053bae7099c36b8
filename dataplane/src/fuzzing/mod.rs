//! Entry points shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`) and the seed-corpus replay
//! test (`dataplane/tests/fuzz_corpus.rs`). Each function takes arbitrary bytes and must never panic;
//! where it can, it also checks an invariant (parse → emit → parse gives the same representation).
#![doc(hidden)]

pub mod io;
pub mod offload;
pub mod pod;
pub mod wire;
pub mod wireguard;
