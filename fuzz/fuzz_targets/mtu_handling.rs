#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vxwg_dataplane::fuzzing::pod::mtu_handling(data);
});
