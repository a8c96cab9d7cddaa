//! IM.DISCONNECT <user> <device> (SPEC §2)

use super::{for_registered, Answer};
use crate::mailbox::Effect;
use redis_module::{Context, RedisString};

/// Marks the device offline; its pending messages become offline at once.
/// Answers how many did.
pub fn disconnect(ctx: &Context, args: &[RedisString]) -> Answer {
    for_registered(ctx, args, |device| Effect::Disconnect { device })
}
