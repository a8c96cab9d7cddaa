//! Settings (spec §7): each one is `im.<name>` in `CONFIG GET/SET` and may
//! be given as `<name> <value>` after the module's path at load time.

use redis_module::configuration::{
    register_bool_configuration, register_enum_configuration, register_i64_configuration,
    register_string_configuration, ConfigurationContext, ConfigurationFlags, ConfigurationValue,
    EnumConfigurationValue,
};
use redis_module::{raw, Context, RedisError, RedisString};
use std::cell::RefCell;
use std::os::raw::c_int;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
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

/// The lowest and highest value of each numeric setting (SPEC §7), for
/// `CONFIG SET` (the server checks them) and the load arguments
/// ([`register`] checks them).
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

/// A numeric setting: its name (`im.<name>` in `CONFIG`), its value, its
/// default and bounds, and whether it is a size, which the server also
/// reads with a unit (`64kb`, `16mb`, as its own memory settings).
struct Numeric {
    name: &'static str,
    value: &'static AtomicI64,
    default: i64,
    bounds: (i64, i64),
    size: bool,
}

/// A plain number ([`Numeric::size`] false) or a size (true).
const fn numeric(
    name: &'static str,
    value: &'static AtomicI64,
    default: i64,
    bounds: (i64, i64),
    size: bool,
) -> Numeric {
    Numeric {
        name,
        value,
        default,
        bounds,
        size,
    }
}

/// The numeric settings (SPEC §7), in the order they are registered.
static NUMERIC: [Numeric; 12] = [
    numeric(
        "resend-interval",
        &RESEND_INTERVAL,
        defaults::RESEND_INTERVAL,
        bounds::RESEND_INTERVAL,
        false,
    ),
    numeric(
        "ack-timeout",
        &ACK_TIMEOUT,
        defaults::ACK_TIMEOUT,
        bounds::ACK_TIMEOUT,
        false,
    ),
    numeric(
        "max-pending",
        &MAX_PENDING,
        defaults::MAX_PENDING,
        bounds::MAX_PENDING,
        false,
    ),
    numeric(
        "sweep-interval",
        &SWEEP_INTERVAL,
        defaults::SWEEP_INTERVAL,
        bounds::SWEEP_INTERVAL,
        false,
    ),
    numeric(
        "sweep-effort",
        &SWEEP_EFFORT,
        defaults::SWEEP_EFFORT,
        bounds::SWEEP_EFFORT,
        false,
    ),
    numeric(
        "sweep-budget",
        &SWEEP_BUDGET,
        defaults::SWEEP_BUDGET,
        bounds::SWEEP_BUDGET,
        false,
    ),
    numeric(
        "max-stanza-bytes",
        &MAX_STANZA_BYTES,
        defaults::MAX_STANZA_BYTES,
        bounds::MAX_STANZA_BYTES,
        true,
    ),
    numeric(
        "max-messages",
        &MAX_MESSAGES,
        defaults::MAX_MESSAGES,
        bounds::MAX_MESSAGES,
        false,
    ),
    numeric(
        "max-bytes",
        &MAX_BYTES,
        defaults::MAX_BYTES,
        bounds::MAX_BYTES,
        true,
    ),
    numeric(
        "retention",
        &RETENTION,
        defaults::RETENTION,
        bounds::RETENTION,
        false,
    ),
    numeric(
        "mailbox-idle",
        &MAILBOX_IDLE,
        defaults::MAILBOX_IDLE,
        bounds::MAILBOX_IDLE,
        false,
    ),
    numeric(
        "device-idle",
        &DEVICE_IDLE,
        defaults::DEVICE_IDLE,
        bounds::DEVICE_IDLE,
        false,
    ),
];

/// The text settings: name, value, default.
static TEXT: [(&str, &TextSetting, &str); 3] = [
    ("offline-types", &OFFLINE_TYPES, defaults::OFFLINE_TYPES),
    ("event-prefix", &EVENT_PREFIX, defaults::EVENT_PREFIX),
    ("delay-from", &DELAY_FROM, defaults::DELAY_FROM),
];

/// The flags (`yes` or `no`): name, value, default.
static FLAGS: [(&str, &AtomicBool, bool); 2] = [
    ("archive", &ARCHIVE, defaults::ARCHIVE),
    ("push-events", &PUSH_EVENTS, defaults::PUSH_EVENTS),
];

/// The one setting with named values.
const QUOTA_POLICY_NAME: &str = "quota-policy";

/// Every setting's name, as `CONFIG` (`im.<name>`) and the load arguments
/// know them.
pub fn names() -> impl Iterator<Item = &'static str> {
    (NUMERIC.iter().map(|n| n.name))
        .chain(TEXT.iter().map(|t| t.0))
        .chain(FLAGS.iter().map(|f| f.0))
        .chain([QUOTA_POLICY_NAME])
}

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

/// The load arguments (`loadmodule <path> <name> <value> ...`, SPEC §7):
/// pairs of a known setting's name (in any case) and a value, no name twice (a value is
/// never taken for a name, nor a name for a value). Each value becomes its
/// setting's default when [`register`] registers it, read as `CONFIG SET`
/// reads the setting.
pub struct LoadArguments<'a>(Vec<(&'a [u8], &'a [u8])>);

impl<'a> LoadArguments<'a> {
    /// The arguments as the server hands them over; Err: the line to log.
    pub fn parse(args: &[&'a [u8]]) -> Result<Self, String> {
        if !args.len().is_multiple_of(2) {
            return Err(
                "redis-im: load arguments are <setting> <value> pairs; one value is missing".into(),
            );
        }
        let mut pairs: Vec<(&[u8], &[u8])> = Vec::with_capacity(args.len() / 2);
        for pair in args.chunks(2) {
            let [name, value] = pair else { continue };
            let shown = crate::log::escape(name, 64);
            // Names in any case, as `CONFIG` takes them.
            let Some(name) = names().find(|n| n.as_bytes().eq_ignore_ascii_case(name)) else {
                return Err(format!("redis-im: unknown setting '{shown}' at load time"));
            };
            let name = name.as_bytes();
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(format!(
                    "redis-im: setting '{shown}' is given twice among the load arguments"
                ));
            }
            pairs.push((name, value));
        }
        Ok(LoadArguments(pairs))
    }

    fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.0
            .iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|&(_, v)| v)
    }
}

/// Why a load argument is refused, as the line to log.
fn refused(name: &str, why: impl std::fmt::Display) -> String {
    format!("redis-im: at load time, {name}: {why}")
}

/// A number as the server reads one for `CONFIG SET`: an optional `-`, then
/// digits with no leading zero, within i64 (`string2ll`); a size as its
/// `memtoull`: digits and an optional unit `b`, `k` (1000), `kb` (1024),
/// `m`, `mb`, `g`, `gb`, in any case.
fn parse_number(v: &[u8], size: bool) -> Option<i64> {
    if size {
        let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
        let unit = std::str::from_utf8(&v[digits..]).ok()?.to_ascii_lowercase();
        let times: u64 = match unit.as_str() {
            "" | "b" => 1,
            "k" => 1000,
            "kb" => 1024,
            "m" => 1000 * 1000,
            "mb" => 1024 * 1024,
            "g" => 1000 * 1000 * 1000,
            "gb" => 1024 * 1024 * 1024,
            _ => return None,
        };
        let n: u64 = std::str::from_utf8(&v[..digits]).ok()?.parse().ok()?;
        return i64::try_from(n.checked_mul(times)?).ok();
    }
    let s = std::str::from_utf8(v).ok()?;
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let canonical = s == "0" || unsigned.starts_with(|c: char| matches!(c, '1'..='9'));
    if !canonical || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Numeric {
    /// The setting's load argument, read and within its bounds; its own
    /// default without one.
    fn default_from(&self, args: &LoadArguments) -> Result<i64, String> {
        let Some(v) = args.get(self.name) else {
            return Ok(self.default);
        };
        let shown = crate::log::escape(v, 64);
        let n = parse_number(v, self.size).ok_or_else(|| {
            refused(
                self.name,
                if self.size {
                    format!(
                        "'{shown}' is not a size (bytes, or a number and k, kb, m, mb, g or gb)"
                    )
                } else {
                    format!("'{shown}' is not a whole number")
                },
            )
        })?;
        let (lo, hi) = self.bounds;
        if n < lo || n > hi {
            return Err(format!(
                "redis-im: at load time, {} {n} is outside {lo} to {hi}",
                self.name
            ));
        }
        Ok(n)
    }
}

/// A flag's load argument: `yes` or `no` in any case, as `CONFIG SET` takes
/// it.
fn flag_from(name: &str, default: bool, args: &LoadArguments) -> Result<bool, String> {
    match args.get(name) {
        None => Ok(default),
        Some(v) if v.eq_ignore_ascii_case(b"yes") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case(b"no") => Ok(false),
        Some(v) => Err(refused(
            name,
            format_args!(
                "the value is yes or no, not '{}'",
                crate::log::escape(v, 64)
            ),
        )),
    }
}

/// `quota-policy`'s load argument: one of the policy's names
/// ([`QuotaPolicy`]'s options, `reject` or `drop-oldest`) in any case.
fn policy_from(args: &LoadArguments) -> Result<QuotaPolicy, String> {
    let Some(v) = args.get(QUOTA_POLICY_NAME) else {
        return Ok(QuotaPolicy::Reject);
    };
    let (names, values) = QuotaPolicy::Reject.get_options();
    names
        .iter()
        .zip(values)
        .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(v))
        .and_then(|(_, value)| QuotaPolicy::try_from(value).ok())
        .ok_or_else(|| {
            refused(
                QUOTA_POLICY_NAME,
                format_args!(
                    "the value is {}, not '{}'",
                    names.join(" or "),
                    crate::log::escape(v, 64)
                ),
            )
        })
}

/// Every setting's default as the load arguments make it, in registration
/// order: numbers, texts, flags, the quota policy.
type Defaults = (Vec<i64>, Vec<String>, Vec<bool>, QuotaPolicy);

/// Reads every load argument; Err: the line to log for the first refused.
fn defaults_from(args: &LoadArguments) -> Result<Defaults, String> {
    let numbers = NUMERIC
        .iter()
        .map(|n| n.default_from(args))
        .collect::<Result<_, _>>()?;
    let texts = TEXT
        .iter()
        .map(|&(name, setting, default)| match args.get(name) {
            None => Ok(default.to_string()),
            Some(v) => setting.accept(v).map_err(|why| refused(name, why)),
        })
        .collect::<Result<_, _>>()?;
    let flags = FLAGS
        .iter()
        .map(|&(name, _, default)| flag_from(name, default, args))
        .collect::<Result<_, _>>()?;
    Ok((numbers, texts, flags, policy_from(args)?))
}

/// Registers every setting with the server, each with its load argument,
/// where one was given, as its default, and has the server set them
/// (`RedisModule_LoadConfigs`): an `im.<name>` line of the server's own
/// configuration (or `MODULE LOADEX ... CONFIG`) wins over a load
/// argument, and `CONFIG REWRITE` writes such lines. Err, the line to
/// log: a load argument that its setting refuses (nothing is registered
/// then), or a value the server refused in its own configuration (its own
/// line says which and why; it stops setting the rest, so the load must
/// fail: Redis 7.0 went on with an empty `offline-types`, which drops
/// every message for an offline device, and Valkey 8.1 and 9.1 crashed
/// unloading the module).
pub fn register(ctx: &Context, args: &LoadArguments) -> Result<(), String> {
    let (numbers, texts, flags, policy) = defaults_from(args)?;
    for (n, default) in NUMERIC.iter().zip(numbers) {
        let kind = if n.size {
            ConfigurationFlags::MEMORY
        } else {
            ConfigurationFlags::DEFAULT
        };
        let (lo, hi) = n.bounds;
        register_i64_configuration(ctx, n.name, n.value, default, lo, hi, kind, None);
    }
    for (&(name, setting, _), default) in TEXT.iter().zip(texts) {
        register_string_configuration(
            ctx,
            name,
            setting,
            &default,
            ConfigurationFlags::DEFAULT,
            None,
        );
    }
    for (&(name, setting, _), default) in FLAGS.iter().zip(flags) {
        register_bool_configuration(
            ctx,
            name,
            setting,
            default,
            ConfigurationFlags::DEFAULT,
            None,
        );
    }
    register_enum_configuration(
        ctx,
        QUOTA_POLICY_NAME,
        &QUOTA_POLICY,
        policy,
        ConfigurationFlags::DEFAULT,
        None,
    );
    // SAFETY: the module's context during its load, which is when the
    // server takes the call.
    let loaded = unsafe {
        raw::RedisModule_LoadConfigs
            .map_or(raw::REDISMODULE_ERR as c_int, |load| load(ctx.get_raw()))
    };
    if loaded == raw::REDISMODULE_OK as c_int {
        Ok(())
    } else {
        Err("redis-im: at load time, a setting given in the server's configuration was refused (the server's line above says which and why)".into())
    }
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
    use super::*;

    fn args<'a>(words: &[&'a str]) -> Vec<&'a [u8]> {
        words.iter().map(|a| a.as_bytes()).collect()
    }

    /// The line a load with these arguments logs; None: it loads.
    fn refusal(words: &[&str]) -> Option<String> {
        let given = args(words);
        LoadArguments::parse(&given)
            .and_then(|a| defaults_from(&a).map(|_| ()))
            .err()
    }

    #[test]
    fn load_arguments_are_pairs_of_a_known_name_given_once() {
        assert_eq!(refusal(&[]), None);
        assert_eq!(refusal(&["ack-timeout", "5000", "push-events", "no"]), None);
        assert!(refusal(&["ack-timeout"])
            .unwrap()
            .contains("one value is missing"));
        assert!(refusal(&["ack-timout", "5"])
            .unwrap()
            .contains("unknown setting 'ack-timout'"));
        let twice = refusal(&["ack-timeout", "5", "max-pending", "9", "ack-timeout", "6"]);
        assert!(twice.unwrap().contains("'ack-timeout' is given twice"));
        let twice = refusal(&["ack-timeout", "5", "ACK-Timeout", "6"]);
        assert!(twice.unwrap().contains("'ACK-Timeout' is given twice"));
        let given = args(&["ACK-TIMEOUT", "6000"]);
        let (numbers, ..) = defaults_from(&LoadArguments::parse(&given).unwrap()).unwrap();
        assert_eq!(numbers[1], 6000);
    }

    #[test]
    fn a_value_that_is_a_settings_name_is_a_value() {
        let given = args(&["event-prefix", "archive", "archive", "yes"]);
        let a = LoadArguments::parse(&given).unwrap();
        let (_, texts, flags, _) = defaults_from(&a).unwrap();
        assert_eq!(texts[1], "archive");
        assert_eq!(flags, [true, defaults::PUSH_EVENTS]);
    }

    #[test]
    fn a_flag_is_yes_or_no_in_any_case() {
        let given = args(&["archive", "YES", "push-events", "No"]);
        let (_, _, flags, _) = defaults_from(&LoadArguments::parse(&given).unwrap()).unwrap();
        assert_eq!(flags, [true, false]);
        for bad in ["maybe", "1", "", "no "] {
            let why = refusal(&["archive", bad]).unwrap();
            assert!(why.contains("archive: the value is yes or no"), "{why}");
        }
    }

    #[test]
    fn numbers_read_as_config_set_reads_them() {
        assert_eq!(parse_number(b"0", false), Some(0));
        assert_eq!(parse_number(b"-5", false), Some(-5));
        assert_eq!(parse_number(b"9223372036854775807", false), Some(i64::MAX));
        for bad in [
            "",
            "+5",
            "05",
            "-0",
            "5 ",
            "1e3",
            "9223372036854775808",
            "abc",
            "10mb",
        ] {
            assert_eq!(parse_number(bad.as_bytes(), false), None, "{bad}");
        }
        assert_eq!(parse_number(b"64kb", true), Some(65536));
        assert_eq!(parse_number(b"1M", true), Some(1_000_000));
        assert_eq!(parse_number(b"16MB", true), Some(16 << 20));
        assert_eq!(parse_number(b"0100b", true), Some(100));
        for bad in ["", "kb", "-1", "1tb", "1 mb", "99999999999gb"] {
            assert_eq!(parse_number(bad.as_bytes(), true), None, "{bad}");
        }
    }

    #[test]
    fn a_refused_load_argument_names_its_setting() {
        for (words, line) in [
            (
                ["ack-timeout", "abc"],
                "ack-timeout: 'abc' is not a whole number",
            ),
            (["ack-timeout", "0"], "ack-timeout 0 is outside 1 to"),
            (["max-bytes", "1tb"], "max-bytes: '1tb' is not a size"),
            (
                ["quota-policy", "never"],
                "quota-policy: the value is reject or drop-oldest, not 'never'",
            ),
            (
                ["offline-types", "chat nromal"],
                "offline-types: offline-types holds RFC 6121",
            ),
            (["event-prefix", "a\u{0}b"], "event-prefix: "),
        ] {
            let why = refusal(&words).unwrap();
            assert!(
                why.starts_with("redis-im: at load time, ") && why.contains(line),
                "{why}"
            );
        }
        let given: Vec<&[u8]> = vec![b"delay-from", b"\xff"];
        let why = defaults_from(&LoadArguments::parse(&given).unwrap()).unwrap_err();
        assert!(why.contains("delay-from: the value must be UTF-8"), "{why}");
        let (_, _, _, policy) =
            defaults_from(&LoadArguments::parse(&args(&["quota-policy", "Drop-Oldest"])).unwrap())
                .unwrap();
        assert_eq!(policy, QuotaPolicy::DropOldest);
    }

    #[test]
    fn every_setting_has_one_name() {
        let all: Vec<&str> = names().collect();
        assert_eq!(all.len(), 18);
        for (i, n) in all.iter().enumerate() {
            assert!(!all[..i].contains(n), "{n}");
        }
    }
}
