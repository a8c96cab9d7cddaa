//! IM.FORGET <user> <device> (SPEC §2)

use super::{for_registered, Answer};
use crate::mailbox::Effect;
use redis_module::{Context, RedisString};

/// Unregisters the device; answers how many messages thereby left the
/// mailbox.
pub fn forget(ctx: &Context, args: &[RedisString]) -> Answer {
    for_registered(ctx, args, |device| Effect::Forget { device })
}
