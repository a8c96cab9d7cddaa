//! Replays every seed and every crash input kept in `artifacts/` through
//! the fuzz targets' checks, and lists those that fail: a quick way to see
//! which known faults a change of the module fixed.
//! `RUSTFLAGS="--cfg fuzzing" cargo test` in `fuzz/`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failed = Vec::new();
    for dir in [
        root.join("seeds").join(target),
        root.join("artifacts").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !f.is_file() || name.starts_with("oom-") || name.starts_with("timeout-") {
                continue;
            }
            let data = std::fs::read(&f).expect("read a seed");
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let short: String = msg.chars().take(200).collect();
                failed.push(format!("{}: {short}", f.display()));
            }
        }
    }
    failed
}

#[test]
fn seeds_pass_every_check() {
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = Vec::new();
    failed.extend(replay("stanza", redis_im_fuzz::check_stanza));
    failed.extend(replay("mailbox_decode", redis_im_fuzz::check_mailbox));
    failed.extend(replay("effect_decode", redis_im_fuzz::check_effects));
    let _ = std::panic::take_hook();
    assert!(
        failed.is_empty(),
        "{} input(s) fail:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
