//! The module timer's callback.

use super::guard;
use crate::{sweep, timer};
use redis_module::{raw, Context};
use std::os::raw::c_void;

/// Runs one timer run, then arms the timer again — the arming is guarded
/// apart, so that a run that failed never leaves the timer unarmed.
///
/// # Safety
/// Called by the server on its main thread with a valid context.
pub unsafe extern "C" fn on_timer(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    let ctx = Context::new(ctx);
    timer::fired();
    guard(
        "the timer's run",
        || (),
        || {
            if timer::runs_here(&ctx) {
                let r = sweep::run(&ctx, Some(timer::budget_us()), None);
                timer::ran(r.lag > 0, r.did_work());
            } else {
                timer::ran(false, false);
            }
        },
    );
    guard("arming the timer", || (), || timer::arm(&ctx));
}
