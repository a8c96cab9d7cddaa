//! Bytes as a mailbox's RDB / IM.LOAD encoding (header, then message
//! batches): decode, read, sweep, and encode back to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| redis_im_fuzz::check_mailbox(data));
