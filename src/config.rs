//! Settings (spec §7): each one is `im.<name>` in `CONFIG GET/SET` and may
//! be given as `<name> <value>` after the module's path at load time.

use redis_module::configuration::{
    ConfigurationContext, ConfigurationValue, EnumConfigurationValue,
};
use redis_module::{RedisError, RedisString};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

pub const DAY_MS: i64 = 24 * 3600 * 1000;

pub static RESEND_INTERVAL: AtomicI64 = AtomicI64::new(3000);
pub static ACK_TIMEOUT: AtomicI64 = AtomicI64::new(10_000);
pub static MAX_PENDING: AtomicI64 = AtomicI64::new(1000);
pub static SWEEP_INTERVAL: AtomicI64 = AtomicI64::new(100);
pub static SWEEP_BUDGET: AtomicI64 = AtomicI64::new(1000);
pub static MAX_STANZA_BYTES: AtomicI64 = AtomicI64::new(65536);
pub static MAX_MESSAGES: AtomicI64 = AtomicI64::new(10_000);
pub static MAX_BYTES: AtomicI64 = AtomicI64::new(16 * 1024 * 1024);
pub static RETENTION: AtomicI64 = AtomicI64::new(7 * DAY_MS);
pub static MAILBOX_IDLE: AtomicI64 = AtomicI64::new(30 * DAY_MS);
pub static DEVICE_IDLE: AtomicI64 = AtomicI64::new(30 * DAY_MS);
pub static ARCHIVE: AtomicBool = AtomicBool::new(false);

pub static QUOTA_POLICY: Mutex<QuotaPolicy> = Mutex::new(QuotaPolicy::Reject);
pub static OFFLINE_TYPES: TypesSetting = TypesSetting {
    text: Mutex::new(String::new()),
    generation: AtomicU64::new(0),
};
pub static EVENT_PREFIX: LazyLock<Mutex<String>> =
    LazyLock::new(|| Mutex::new("im:events:".into()));
pub static DELAY_FROM: Mutex<String> = Mutex::new(String::new());

/// What `IM.STORE` does when the mailbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaPolicy {
    Reject = 0,
    DropOldest = 1,
}

impl TryFrom<i32> for QuotaPolicy {
    type Error = RedisError;
    fn try_from(v: i32) -> Result<Self, RedisError> {
        match v {
            0 => Ok(QuotaPolicy::Reject),
            1 => Ok(QuotaPolicy::DropOldest),
            _ => Err(RedisError::Str("quota-policy is reject or drop-oldest")),
        }
    }
}

impl From<QuotaPolicy> for i32 {
    fn from(v: QuotaPolicy) -> i32 {
        v as i32
    }
}

impl EnumConfigurationValue for QuotaPolicy {
    fn get_options(&self) -> (Vec<String>, Vec<i32>) {
        (vec!["reject".into(), "drop-oldest".into()], vec![0, 1])
    }
}

pub fn get(v: &AtomicI64) -> i64 {
    v.load(Ordering::Relaxed)
}

fn text(m: &Mutex<String>) -> String {
    m.lock().map(|s| s.clone()).unwrap_or_default()
}

pub fn quota_policy() -> QuotaPolicy {
    QUOTA_POLICY
        .lock()
        .map(|p| *p)
        .unwrap_or(QuotaPolicy::Reject)
}

/// A setting that holds a list of message types: its text, and a
/// generation that moves on every change so that readers can keep their
/// parsed copy until then.
pub struct TypesSetting {
    text: Mutex<String>,
    generation: AtomicU64,
}

impl ConfigurationValue<RedisString> for TypesSetting {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        RedisString::create(
            None,
            self.text.lock().unwrap_or_else(|e| e.into_inner()).as_str(),
        )
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        *self.text.lock().unwrap_or_else(|e| e.into_inner()) = val.try_as_str()?.to_string();
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Is `t` one of the message types kept offline? The setting is parsed
/// once per value (commands run on the main thread; the copy is its own).
pub fn is_offline_type(t: &[u8]) -> bool {
    thread_local! {
        static PARSED: RefCell<(u64, Vec<Vec<u8>>)> = const { RefCell::new((u64::MAX, Vec::new())) };
    }
    PARSED.with_borrow_mut(|(generation, types)| {
        let now = OFFLINE_TYPES.generation.load(Ordering::Relaxed);
        if *generation != now {
            let text = OFFLINE_TYPES.text.lock().unwrap_or_else(|e| e.into_inner());
            *types = text
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec())
                .collect();
            *generation = now;
        }
        types.iter().any(|k| k.as_slice() == t)
    })
}

pub fn event_prefix() -> String {
    text(&EVENT_PREFIX)
}

pub fn delay_from() -> String {
    text(&DELAY_FROM)
}
