//! Bytes as an IM.APPLY effect blob and its stanza argument: decode and
//! encode back to the same effects.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| redis_im_fuzz::check_effects(data));
