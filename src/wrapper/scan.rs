//! The scan of a db's mailboxes (`RedisModule_Scan`): the schedule and the
//! archive index are rebuilt with it, a flush counts what it empties, and
//! `IM.DOCTOR` looks at the backlog through it.

use super::guard;
use crate::keyspace;
use crate::mailbox::Mailbox;
use crate::server;
use redis_module::{raw, Context, RedisString};
use std::os::raw::c_void;

/// What the scan calls for each mailbox: its key and value; answers
/// whether to go on (the scan stops between the server's scan steps, so
/// a few more mailboxes may be seen after a `false`).
type Visit<'a> = dyn FnMut(&[u8], &Mailbox) -> bool + 'a;

struct State<'a, 'b> {
    visit: &'a mut Visit<'b>,
    go_on: bool,
}

/// # Safety
/// Called by `RedisModule_Scan` with a valid key and `data` the `State`.
unsafe extern "C" fn on_key(
    _ctx: *mut raw::RedisModuleCtx,
    name: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
    data: *mut c_void,
) {
    if key.is_null() || name.is_null() || data.is_null() {
        return;
    }
    let state = &mut *data.cast::<State<'_, '_>>();
    let (Some(get_type), Some(get_value)) = (
        raw::RedisModule_ModuleTypeGetType,
        raw::RedisModule_ModuleTypeGetValue,
    ) else {
        return;
    };
    if !state.go_on || get_type(key) != keyspace::mailbox_type() {
        return;
    }
    let value = get_value(key);
    if value.is_null() {
        return;
    }
    let mb = &*value.cast::<Mailbox>();
    let key_name = RedisString::string_as_slice(name);
    state.go_on = guard(
        "visiting a scanned mailbox",
        || true,
        || (state.visit)(key_name, mb),
    );
}

/// Visits every mailbox of `db` (until `visit` answers false); false when
/// the db does not exist. The db selected before is selected again.
pub fn mailboxes(ctx: &Context, db: i32, visit: &mut Visit<'_>) -> bool {
    let _keep = server::KeepDb::new(ctx);
    if !server::select_db(ctx, db) {
        return false;
    }
    let (Some(create), Some(scan_fn), Some(destroy)) = (unsafe {
        (
            raw::RedisModule_ScanCursorCreate,
            raw::RedisModule_Scan,
            raw::RedisModule_ScanCursorDestroy,
        )
    }) else {
        return false;
    };
    let mut state = State { visit, go_on: true };
    // SAFETY: the cursor is made, used and destroyed here; the state
    // outlives the scan.
    unsafe {
        let cursor = create();
        while state.go_on
            && scan_fn(
                ctx.get_raw(),
                cursor,
                Some(on_key),
                (&mut state as *mut State<'_, '_>).cast(),
            ) != 0
        {}
        destroy(cursor);
    }
    true
}

/// Visits every mailbox of every db.
pub fn all_mailboxes(ctx: &Context, visit: &mut dyn FnMut(i32, &[u8], &Mailbox) -> bool) {
    let mut db = 0;
    let mut go_on = true;
    while go_on
        && mailboxes(ctx, db, &mut |key, mb| {
            go_on = visit(db, key, mb);
            go_on
        })
    {
        db += 1;
    }
}
