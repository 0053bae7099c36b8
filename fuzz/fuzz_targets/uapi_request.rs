#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vxwg_control::fuzzing::uapi_request(data);
});
