//! Settings (spec §7): each one is `im.<name>` in `CONFIG GET/SET` and may
//! be given as `<name> <value>` after the module's path at load time.

use redis_module::configuration::{
    ConfigurationContext, ConfigurationValue, EnumConfigurationValue,
};
use redis_module::{RedisError, RedisString};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

pub const DAY_MS: i64 = 24 * 3600 * 1000;

/// Every setting's default, in its unit (SPEC §7); registration passes
/// them to the server, which sets each at load time.
pub mod defaults {
    use super::DAY_MS;
    /// ms; 0: no resend events.
    pub const RESEND_INTERVAL: i64 = 3000;
    /// ms.
    pub const ACK_TIMEOUT: i64 = 10_000;
    /// Pending messages per device.
    pub const MAX_PENDING: i64 = 1000;
    /// ms; 0: the timer is off.
    pub const SWEEP_INTERVAL: i64 = 100;
    /// µs of work per timer run.
    pub const SWEEP_BUDGET: i64 = 1000;
    /// % of one core the timer may take while due work is overdue.
    pub const SWEEP_EFFORT: i64 = 25;
    /// bytes.
    pub const MAX_STANZA_BYTES: i64 = 65536;
    /// Messages per mailbox.
    pub const MAX_MESSAGES: i64 = 10_000;
    /// Stanza bytes per mailbox.
    pub const MAX_BYTES: i64 = 16 * 1024 * 1024;
    /// ms; 0: kept forever.
    pub const RETENTION: i64 = 7 * DAY_MS;
    /// ms; 0: never.
    pub const MAILBOX_IDLE: i64 = 30 * DAY_MS;
    /// ms; 0: never.
    pub const DEVICE_IDLE: i64 = 30 * DAY_MS;
    pub const ARCHIVE: bool = false;
    /// On: a phone asleep learns of its messages only from a push, and
    /// the event costs one publish per device that got messages offline.
    pub const PUSH_EVENTS: bool = true;
    pub const OFFLINE_TYPES: &str = "chat normal";
    pub const EVENT_PREFIX: &str = "im:events:";
    pub const DELAY_FROM: &str = "";
}

/// The lowest and highest value of each numeric setting (SPEC §7), the
/// same for `CONFIG SET` (the server checks them) and at load time
/// ([`out_of_bounds`] checks them, since the server takes load arguments
/// as the settings' defaults without a check).
pub mod bounds {
    /// Ceiling of the settings in ms, counts and bytes without a bound of
    /// their own: far beyond any use, far from overflowing a sum with a time.
    pub const MS: i64 = i64::MAX / 4;
    pub const RESEND_INTERVAL: (i64, i64) = (0, MS);
    pub const ACK_TIMEOUT: (i64, i64) = (1, MS);
    pub const MAX_PENDING: (i64, i64) = (1, MS);
    pub const SWEEP_INTERVAL: (i64, i64) = (0, MS);
    pub const SWEEP_EFFORT: (i64, i64) = (1, 100);
    pub const SWEEP_BUDGET: (i64, i64) = (1, MS);
    pub const MAX_STANZA_BYTES: (i64, i64) = (16, 512 * 1024 * 1024);
    pub const MAX_MESSAGES: (i64, i64) = (1, MS);
    pub const MAX_BYTES: (i64, i64) = (1, MS);
    pub const RETENTION: (i64, i64) = (0, MS);
    pub const MAILBOX_IDLE: (i64, i64) = (0, MS);
    pub const DEVICE_IDLE: (i64, i64) = (0, MS);
}

/// The first numeric setting whose value is outside its [`bounds`], as the
/// line to log: the load arguments set them unchecked.
pub fn out_of_bounds() -> Option<String> {
    let all: [(&str, &AtomicI64, (i64, i64)); 12] = [
        ("resend-interval", &RESEND_INTERVAL, bounds::RESEND_INTERVAL),
        ("ack-timeout", &ACK_TIMEOUT, bounds::ACK_TIMEOUT),
        ("max-pending", &MAX_PENDING, bounds::MAX_PENDING),
        ("sweep-interval", &SWEEP_INTERVAL, bounds::SWEEP_INTERVAL),
        ("sweep-effort", &SWEEP_EFFORT, bounds::SWEEP_EFFORT),
        ("sweep-budget", &SWEEP_BUDGET, bounds::SWEEP_BUDGET),
        (
            "max-stanza-bytes",
            &MAX_STANZA_BYTES,
            bounds::MAX_STANZA_BYTES,
        ),
        ("max-messages", &MAX_MESSAGES, bounds::MAX_MESSAGES),
        ("max-bytes", &MAX_BYTES, bounds::MAX_BYTES),
        ("retention", &RETENTION, bounds::RETENTION),
        ("mailbox-idle", &MAILBOX_IDLE, bounds::MAILBOX_IDLE),
        ("device-idle", &DEVICE_IDLE, bounds::DEVICE_IDLE),
    ];
    all.iter().find_map(|(name, v, (lo, hi))| {
        let v = v.load(Ordering::Relaxed);
        (v < *lo || v > *hi).then(|| format!("{name} {v} is outside {lo} to {hi}"))
    })
}

/// How many times the server has set one of the settings: once for each
/// setting while it loads the module (the value given, else the default),
/// then once for each `CONFIG SET` of one.
static SETS: AtomicUsize = AtomicUsize::new(0);

/// What the library calls after a setting took a value: the context, the
/// setting's name, the setting.
pub type OnSet<T> = Box<dyn Fn(&ConfigurationContext, &str, &'static T)>;

/// The hook every setting is registered with: called by the server's set
/// after the value is taken, it counts the set (see [`every_setting_set`]).
pub fn counted<T>() -> Option<OnSet<T>> {
    Some(Box::new(|_, _, _| {
        SETS.fetch_add(1, Ordering::Relaxed);
    }))
}

/// Whether the server set every setting while loading the module. A value
/// it refuses in its own configuration (`im.<name> <value>` in the file or
/// on the command line, `MODULE LOADEX ... CONFIG`) stops its setting of
/// the rest; the library the module is built on does not pass that on, and
/// the load went on with settings never set (Redis 7.0: an empty
/// `offline-types`, which drops every message for an offline device) or
/// crashed unloading the module afterwards (Valkey 8.1 and 9.1). Asked
/// once when the load begins, so that it fails instead; the count starts
/// again from zero, so that a load that failed leaves nothing to the next
/// one should the server keep the library mapped.
pub fn every_setting_set() -> bool {
    SETS.swap(0, Ordering::Relaxed) >= NAMES.len()
}

/// The names of the settings, as `CONFIG` and the load arguments know them
/// (`im.<name>` in `CONFIG`).
pub const NAMES: &[&str] = &[
    "resend-interval",
    "ack-timeout",
    "max-pending",
    "sweep-interval",
    "sweep-budget",
    "sweep-effort",
    "max-stanza-bytes",
    "max-messages",
    "max-bytes",
    "retention",
    "mailbox-idle",
    "device-idle",
    "offline-types",
    "event-prefix",
    "delay-from",
    "archive",
    "quota-policy",
    "push-events",
];

pub static RESEND_INTERVAL: AtomicI64 = AtomicI64::new(defaults::RESEND_INTERVAL);
pub static ACK_TIMEOUT: AtomicI64 = AtomicI64::new(defaults::ACK_TIMEOUT);
pub static MAX_PENDING: AtomicI64 = AtomicI64::new(defaults::MAX_PENDING);
pub static SWEEP_INTERVAL: AtomicI64 = AtomicI64::new(defaults::SWEEP_INTERVAL);
pub static SWEEP_BUDGET: AtomicI64 = AtomicI64::new(defaults::SWEEP_BUDGET);
pub static SWEEP_EFFORT: AtomicI64 = AtomicI64::new(defaults::SWEEP_EFFORT);
pub static MAX_STANZA_BYTES: AtomicI64 = AtomicI64::new(defaults::MAX_STANZA_BYTES);
pub static MAX_MESSAGES: AtomicI64 = AtomicI64::new(defaults::MAX_MESSAGES);
pub static MAX_BYTES: AtomicI64 = AtomicI64::new(defaults::MAX_BYTES);
pub static RETENTION: AtomicI64 = AtomicI64::new(defaults::RETENTION);
pub static MAILBOX_IDLE: AtomicI64 = AtomicI64::new(defaults::MAILBOX_IDLE);
pub static DEVICE_IDLE: AtomicI64 = AtomicI64::new(defaults::DEVICE_IDLE);
pub static ARCHIVE: AtomicBool = AtomicBool::new(defaults::ARCHIVE);
pub static PUSH_EVENTS: AtomicBool = AtomicBool::new(defaults::PUSH_EVENTS);

pub static QUOTA_POLICY: PolicySetting = PolicySetting(AtomicU8::new(QuotaPolicy::Reject as u8));
pub static OFFLINE_TYPES: TextSetting = TextSetting::new(check_types);
pub static EVENT_PREFIX: TextSetting = TextSetting::new(check_event_prefix);
pub static DELAY_FROM: TextSetting = TextSetting::new(check_delay_from);

/// Most bytes in a text setting.
pub const MAX_TEXT_SETTING: usize = 1024;

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

pub fn quota_policy() -> QuotaPolicy {
    QUOTA_POLICY.get()
}

/// `quota-policy`, read on every store without a lock.
pub struct PolicySetting(AtomicU8);

impl PolicySetting {
    fn get(&self) -> QuotaPolicy {
        match self.0.load(Ordering::Relaxed) {
            1 => QuotaPolicy::DropOldest,
            _ => QuotaPolicy::Reject,
        }
    }
}

impl ConfigurationValue<QuotaPolicy> for PolicySetting {
    fn get(&self, _ctx: &ConfigurationContext) -> QuotaPolicy {
        PolicySetting::get(self)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: QuotaPolicy) -> Result<(), RedisError> {
        self.0.store(val as u8, Ordering::Relaxed);
        Ok(())
    }
}

/// A text setting: its value, a check that refuses a bad one (`CONFIG
/// SET` answers the check's error and keeps the old value), and a
/// generation that moves on every change so that readers can keep a
/// parsed copy until then. Values are any UTF-8 the check accepts, NUL
/// included where it does: `CONFIG GET` hands them back byte for byte.
pub struct TextSetting {
    text: Mutex<String>,
    generation: AtomicU64,
    check: fn(&str) -> Result<(), &'static str>,
}

impl TextSetting {
    const fn new(check: fn(&str) -> Result<(), &'static str>) -> Self {
        TextSetting {
            text: Mutex::new(String::new()),
            generation: AtomicU64::new(0),
            check,
        }
    }

    pub fn text(&self) -> String {
        self.text.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// `val` as the setting's text, or why it is refused: not UTF-8,
    /// longer than [`MAX_TEXT_SETTING`] bytes, or refused by the setting's
    /// own check.
    fn accept(&self, val: &[u8]) -> Result<String, &'static str> {
        let Ok(value) = std::str::from_utf8(val) else {
            return Err("the value must be UTF-8");
        };
        if value.len() > MAX_TEXT_SETTING {
            return Err("the value is longer than 1024 bytes");
        }
        (self.check)(value)?;
        Ok(value.to_string())
    }
}

/// Why the load arguments (`loadmodule <path> <name> <value> ...`, SPEC
/// §7), as the server hands them over, cannot be taken, as the line to
/// log; None when they can. The server's library reads them as the
/// settings' defaults by looking for each setting's name among all the
/// arguments, values included, taking the first it finds; so that what
/// it reads is what the operator wrote, the arguments must be pairs of a
/// known name and a value, no name twice, and no value a setting's name
/// (the library would take it for one). A flag (`archive`,
/// `push-events`) is `yes` or `no` exactly: the library reads anything
/// but `yes` as no. A text setting's value passes its own check
/// ([`text_refused_at_load`]).
pub fn load_arguments_refused(args: &[&[u8]]) -> Option<String> {
    if !args.len().is_multiple_of(2) {
        return Some(
            "redis-im: load arguments are <setting> <value> pairs; one value is missing".into(),
        );
    }
    let known = |b: &[u8]| NAMES.iter().any(|n| n.as_bytes() == b);
    for (i, name) in args.iter().step_by(2).enumerate() {
        let shown = crate::log::escape(name, 64);
        if !known(name) {
            return Some(format!("redis-im: unknown setting '{shown}' at load time"));
        }
        if args[..2 * i].iter().step_by(2).any(|n| n == name) {
            return Some(format!(
                "redis-im: setting '{shown}' is given twice among the load arguments"
            ));
        }
    }
    for pair in args.chunks(2) {
        let [name, value] = pair else { continue };
        let setting = std::str::from_utf8(name).unwrap_or("?");
        if known(value) {
            return Some(format!(
                "redis-im: at load time, {setting}: its value '{}' is also a setting's name, which the server cannot tell from one among the load arguments; set it with CONFIG SET im.{setting} or an im.{setting} line in the server's configuration",
                crate::log::escape(value, 64)
            ));
        }
        if matches!(setting, "archive" | "push-events") && !matches!(*value, b"yes" | b"no") {
            return Some(format!(
                "redis-im: at load time, {setting}: the value is yes or no, not '{}'",
                crate::log::escape(value, 64)
            ));
        }
        if let Some(why) = text_refused_at_load(name, value) {
            return Some(format!("redis-im: at load time, {why}"));
        }
    }
    None
}

/// Why the text setting `name` refuses `value` among the load arguments,
/// as the line to log; None when it takes it or `name` is not a text
/// setting. The server has already run the same check and stopped setting
/// the rest ([`every_setting_set`] then fails the load too); this line
/// names the load argument as such, where the server's calls it the
/// setting's "default value".
pub fn text_refused_at_load(name: &[u8], value: &[u8]) -> Option<String> {
    let setting = match name {
        b"offline-types" => &OFFLINE_TYPES,
        b"event-prefix" => &EVENT_PREFIX,
        b"delay-from" => &DELAY_FROM,
        _ => return None,
    };
    setting.accept(value).err().map(|why| {
        let name = std::str::from_utf8(name).unwrap_or("?");
        format!("{name}: {why}")
    })
}

impl ConfigurationValue<RedisString> for TextSetting {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        let text = self.text.lock().unwrap_or_else(|e| e.into_inner());
        RedisString::create_from_slice(std::ptr::null_mut(), text.as_bytes())
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let value = self.accept(val.as_slice()).map_err(RedisError::Str)?;
        *self.text.lock().unwrap_or_else(|e| e.into_inner()) = value;
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The names an `offline-types` value holds: split at spaces, tabs, line
/// ends and commas (other characters, Unicode spaces included, are part
/// of a name, which [`check_types`] then refuses).
fn type_names(v: &str) -> impl Iterator<Item = &str> {
    v.split([' ', '\t', '\n', '\r', ','])
        .filter(|s| !s.is_empty())
}

/// `offline-types`: message types of RFC 6121 §5.2.2 (`chat`, `error`,
/// `groupchat`, `headline`, `normal`, case-sensitive), separated by spaces
/// or commas; empty keeps no message offline. Any other name is refused:
/// a stanza's unknown `type` is handled as `normal`, so such a name would
/// match nothing and silently take `chat` or `normal` off the list.
fn check_types(v: &str) -> Result<(), &'static str> {
    if type_names(v).all(|t| crate::stanza::MESSAGE_TYPES.contains(&t.as_bytes())) {
        Ok(())
    } else {
        Err("offline-types holds RFC 6121 message types (chat, error, groupchat, headline, normal) separated by spaces or commas")
    }
}

/// `event-prefix`: the start of every event channel's name.
fn check_event_prefix(v: &str) -> Result<(), &'static str> {
    if v.chars().any(char::is_control) {
        return Err("event-prefix may not hold control characters");
    }
    Ok(())
}

/// `delay-from`: written into stanzas as an XML attribute value (XEP-0203
/// `from`), so every character must be an XML 1.0 `Char`
/// (`stanza::check_delay_from`).
fn check_delay_from(v: &str) -> Result<(), &'static str> {
    crate::stanza::check_delay_from(v.as_bytes())
        .map_err(|_| "delay-from holds a character XML does not allow (it is written into stanzas)")
}

/// The message types of the default `offline-types` (`chat`, `normal`)
/// that the setting now leaves out: such messages to a user with no device
/// online are dropped (SPEC §3).
pub fn default_types_left_out() -> Vec<&'static str> {
    type_names(defaults::OFFLINE_TYPES)
        .filter(|t| !is_offline_type(t.as_bytes()))
        .collect()
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
            *types = type_names(&text).map(|s| s.as_bytes().to_vec()).collect();
            *generation = now;
        }
        types.iter().any(|k| k.as_slice() == t)
    })
}

/// `push-events`: `offline` events on `<event-prefix>push` (SPEC §5).
pub fn push_events() -> bool {
    PUSH_EVENTS.load(Ordering::Relaxed)
}

/// `event-prefix`, from a copy kept until the setting changes (commands
/// run on the main thread; the copy is its own).
pub fn event_prefix() -> Rc<[u8]> {
    thread_local! {
        static COPY: RefCell<(u64, Rc<[u8]>)> = RefCell::new((u64::MAX, Rc::from(&[][..])));
    }
    COPY.with_borrow_mut(|(generation, prefix)| {
        let now = EVENT_PREFIX.generation.load(Ordering::Relaxed);
        if *generation != now {
            let text = EVENT_PREFIX.text.lock().unwrap_or_else(|e| e.into_inner());
            *prefix = Rc::from(text.as_bytes());
            *generation = now;
        }
        prefix.clone()
    })
}

pub fn delay_from() -> String {
    DELAY_FROM.text()
}

#[cfg(test)]
mod tests {
    use super::load_arguments_refused;

    fn refused(args: &[&str]) -> Option<String> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        load_arguments_refused(&args)
    }

    #[test]
    fn load_arguments_are_pairs_of_a_known_name_given_once() {
        assert_eq!(refused(&[]), None);
        assert_eq!(refused(&["ack-timeout", "5000", "push-events", "no"]), None);
        assert!(refused(&["ack-timeout"])
            .unwrap()
            .contains("one value is missing"));
        assert!(refused(&["ack-timout", "5"])
            .unwrap()
            .contains("unknown setting 'ack-timout'"));
        let twice = refused(&["ack-timeout", "5", "max-pending", "9", "ack-timeout", "6"]);
        assert!(twice.unwrap().contains("'ack-timeout' is given twice"));
    }

    #[test]
    fn a_load_argument_value_may_not_be_a_settings_name() {
        let why = refused(&["event-prefix", "archive", "archive", "yes"]).unwrap();
        assert!(
            why.contains("event-prefix: its value 'archive' is also a setting's name"),
            "{why}"
        );
        assert!(refused(&["event-prefix", "ack-timeout"]).is_some());
        assert_eq!(refused(&["event-prefix", "archives"]), None);
    }

    #[test]
    fn a_flag_at_load_time_is_yes_or_no_exactly() {
        for ok in ["yes", "no"] {
            assert_eq!(refused(&["push-events", ok, "archive", ok]), None);
        }
        for bad in ["YES", "maybe", "1", "", "no "] {
            let why = refused(&["archive", bad]).unwrap();
            assert!(why.contains("archive: the value is yes or no"), "{why}");
        }
    }

    #[test]
    fn a_text_setting_at_load_time_passes_its_own_check() {
        let why = refused(&["offline-types", "chat nromal"]).unwrap();
        assert!(
            why.starts_with("redis-im: at load time, offline-types: "),
            "{why}"
        );
        assert_eq!(refused(&["offline-types", "chat normal headline"]), None);
    }
}
