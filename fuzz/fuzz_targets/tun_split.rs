#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vxwg_dataplane::fuzzing::offload::tun_split(data);
});
