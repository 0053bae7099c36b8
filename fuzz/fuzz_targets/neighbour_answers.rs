#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vxwg_dataplane::fuzzing::pod::neighbour_answers(data);
});
