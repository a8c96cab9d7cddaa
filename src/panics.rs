//! Panics: [`guard`], which keeps one from crossing into the server (every
//! entry point in `wrapper` runs inside it, and so does each mailbox visit
//! of a timer run), and the hook that writes each panic to the server's
//! log.

use crate::{log, metrics};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Once, OnceLock};

/// Runs `f`; when it panics, counts the panic (`INFO im` `panics`), logs
/// which entry point it was (the panic itself was logged by the hook, with
/// its place and message) and answers `fallback()`.
pub fn guard<T>(entry: &str, fallback: impl FnOnce() -> T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            metrics::PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log::warning(&format!(
                "redis-im: {entry} failed (see the panic above); the server goes on"
            ));
            fallback()
        }
    }
}

/// Installs, once, a panic hook that writes the panic to the server's log
/// (`redis-im panicked at <file>:<line>: <message>`) before the default
/// hook writes it to standard error, which servers often discard.
pub fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            let place = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_else(|| "an unknown place".into());
            log::warning(&format!(
                "redis-im panicked at {place}: {}",
                log::escape(message.as_bytes(), 512)
            ));
            default(info);
        }));
    });
}

/// The key named by the environment variable `REDIS_IM_DEBUG_PANIC_KEY`
/// when the module was loaded: every command naming it and every timer
/// visit of its mailbox panics on purpose. It exists for the tests of the
/// guards above (a panic logged, counted, answered as an error; the timer
/// going on for the other mailboxes); unset, it costs one load per call.
static DEBUG_PANIC_KEY: OnceLock<Option<Vec<u8>>> = OnceLock::new();

/// Reads `REDIS_IM_DEBUG_PANIC_KEY` (at load time).
pub fn read_debug_key() {
    let key = std::env::var_os("REDIS_IM_DEBUG_PANIC_KEY").map(|v| {
        use std::os::unix::ffi::OsStrExt;
        v.as_bytes().to_vec()
    });
    if let Some(k) = &key {
        log::warning(&format!(
            "redis-im: REDIS_IM_DEBUG_PANIC_KEY is set: every command and timer visit of key '{}' panics on purpose (for tests only)",
            log::escape(k, 128)
        ));
    }
    let _ = DEBUG_PANIC_KEY.set(key);
}

/// Panics when `key` is the one named by `REDIS_IM_DEBUG_PANIC_KEY`.
pub fn debug_panic(key: &[u8]) {
    if let Some(Some(k)) = DEBUG_PANIC_KEY.get() {
        if k.as_slice() == key {
            panic!("deliberate panic for the key named by REDIS_IM_DEBUG_PANIC_KEY");
        }
    }
}
