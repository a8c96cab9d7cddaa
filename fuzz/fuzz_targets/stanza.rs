//! Bytes as an IM.STORE stanza: `redis_im::stanza::parse` against the
//! reference checker, and `with_delay` on what it accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| redis_im_fuzz::check_stanza(data));
