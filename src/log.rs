//! Lines in the server's log. Anything the module logs may hold client
//! bytes (a key, a device name): every line goes through
//! `RedisModule_Log(ctx, level, "%s", line)`, never as the format itself,
//! and control or non-UTF-8 bytes are escaped with [`escape`] by the
//! caller, so a line is always one line of printable text.

use redis_module::raw;
use std::ffi::CString;
use std::os::raw::c_char;
use std::sync::atomic::{AtomicPtr, Ordering};

/// A detached context of this module, made at load time, so that lines
/// carry the module's name (`<im>`) and may be written from any thread
/// (a mailbox freed on a lazy-free thread, a panic there).
static LOG_CTX: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(std::ptr::null_mut());

/// Keeps a detached context for logging (at load time, from `init`).
pub fn init(ctx: &redis_module::Context) {
    // SAFETY: called with the module's load context; the API table is
    // filled in by then. A server without the call logs without it.
    let detached = unsafe {
        raw::RedisModule_GetDetachedThreadSafeContext
            .map_or(std::ptr::null_mut(), |f| f(ctx.get_raw()))
    };
    LOG_CTX.store(detached, Ordering::Release);
}

/// Server log levels, as `RedisModule_Log` names them.
#[derive(Clone, Copy)]
pub enum Level {
    Warning,
    Notice,
}

/// Writes one line at `level`. `line` is the module's own text: bytes that
/// came from a client belong in it only through [`escape`].
pub fn line(level: Level, line: &str) {
    let Some(log) = (unsafe { raw::RedisModule_Log }) else {
        return;
    };
    let level = match level {
        Level::Warning => c"warning",
        Level::Notice => c"notice",
    };
    // No NUL survives `escape`; any that the module's own text held would
    // cut the line, never fail it.
    let text = CString::new(line.replace(['\0', '\r', '\n'], " ")).unwrap_or_default();
    // SAFETY: "%s" with one NUL-terminated string; the context is this
    // module's detached context or null, both accepted by the server.
    unsafe {
        log(
            LOG_CTX.load(Ordering::Acquire),
            level.as_ptr(),
            c"%s".as_ptr(),
            text.as_ptr() as *const c_char,
        )
    };
}

pub fn warning(text: &str) {
    line(Level::Warning, text);
}

pub fn notice(text: &str) {
    line(Level::Notice, text);
}

/// Client bytes made fit for a log line or an error text: printable ASCII
/// as it is, `\` doubled, other bytes as `\xNN`, and at most `max` bytes of
/// input (then `...`). Valid UTF-8 beyond ASCII is kept when `utf8` is
/// true (error replies show a user's own script), escaped otherwise.
pub fn escape(bytes: &[u8], max: usize) -> String {
    let cut = bytes.len() > max;
    let bytes = &bytes[..bytes.len().min(max)];
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                ' '..='~' => out.push(c),
                c if !c.is_ascii() && !c.is_control() => out.push(c),
                c => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if cut {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escape_keeps_text_and_escapes_the_rest() {
        assert_eq!(escape(b"alice@example.com", 64), "alice@example.com");
        assert_eq!(escape(b"a\x00b\r\n", 64), "a\\x00b\\x0d\\x0a");
        assert_eq!(escape("一Ā".as_bytes(), 64), "一Ā");
        assert_eq!(escape(b"\xff\xfe%s%n\\", 64), "\\xff\\xfe%s%n\\\\");
        assert_eq!(escape(b"abcdef", 3), "abc...");
        // U+0085 (NEL) is a control character.
        assert_eq!(escape("\u{85}".as_bytes(), 64), "\\xc2\\x85");
        assert!(!escape(&[0u8; 10], 64).contains('\0'));
    }
}
