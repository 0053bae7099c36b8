#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vxwg_dataplane::fuzzing::io::proc_stat(data);
});
