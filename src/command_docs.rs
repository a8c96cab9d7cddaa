//! What `COMMAND DOCS` tells of each command's arguments, tips and ACL
//! categories: plain data, handed to the server at load time by
//! `wrapper::command` (`RedisModule_SetCommandInfo`,
//! `RedisModule_SetCommandACLCategories`). `redis-cli` builds its argument
//! hints and `HELP <command>` from it. `docs/commands.md` describes the
//! same commands for people; `redis-tests/test_metadata.py` checks both
//! against what each server reports.

use std::ffi::CStr;

/// The type of an argument, as `COMMAND DOCS` names it.
#[derive(Clone, Copy, Debug)]
pub enum ArgKind {
    /// The key (the user's mailbox).
    Key,
    /// Any bytes.
    String,
    /// A decimal integer.
    Integer,
    /// A token alone (`FORCE`); `token` holds it.
    PureToken,
    /// Exactly one of the sub-arguments.
    OneOf(&'static [Arg]),
    /// The sub-arguments in order (after `token`, if any).
    Block(&'static [Arg]),
}

/// One argument of a command.
#[derive(Clone, Copy, Debug)]
pub struct Arg {
    /// Its name, which `redis-cli` shows as the hint.
    pub name: &'static CStr,
    /// Its type.
    pub kind: ArgKind,
    /// The word that precedes it (`ID <id>`), or that it is (pure tokens).
    pub token: Option<&'static CStr>,
    /// It may be left out.
    pub optional: bool,
    /// It may be repeated.
    pub multiple: bool,
}

impl Arg {
    const fn new(name: &'static CStr, kind: ArgKind) -> Arg {
        Arg {
            name,
            kind,
            token: None,
            optional: false,
            multiple: false,
        }
    }
    /// The key argument.
    pub const fn key(name: &'static CStr) -> Arg {
        Arg::new(name, ArgKind::Key)
    }
    /// A string argument.
    pub const fn string(name: &'static CStr) -> Arg {
        Arg::new(name, ArgKind::String)
    }
    /// An integer argument.
    pub const fn integer(name: &'static CStr) -> Arg {
        Arg::new(name, ArgKind::Integer)
    }
    /// A token standing alone, named as its lower-case self.
    pub const fn pure_token(name: &'static CStr, token: &'static CStr) -> Arg {
        Arg::new(name, ArgKind::PureToken).token(token)
    }
    /// One of `subargs`.
    pub const fn one_of(name: &'static CStr, subargs: &'static [Arg]) -> Arg {
        Arg::new(name, ArgKind::OneOf(subargs))
    }
    /// `subargs` in order.
    pub const fn block(name: &'static CStr, subargs: &'static [Arg]) -> Arg {
        Arg::new(name, ArgKind::Block(subargs))
    }
    /// Preceded by `token`.
    pub const fn token(mut self, token: &'static CStr) -> Arg {
        self.token = Some(token);
        self
    }
    /// May be left out.
    pub const fn optional(mut self) -> Arg {
        self.optional = true;
        self
    }
    /// May be repeated.
    pub const fn multiple(mut self) -> Arg {
        self.multiple = true;
        self
    }
}

const USER: Arg = Arg::key(c"user");
const DEVICE: Arg = Arg::string(c"device");

/// IM.CONNECT <user> <device> [NODE <node>]
pub const CONNECT: &[Arg] = &[USER, DEVICE, Arg::string(c"node").token(c"NODE").optional()];
/// IM.DISCONNECT / IM.FORGET <user> <device>
pub const USER_DEVICE: &[Arg] = &[USER, DEVICE];
/// IM.DEVICES / IM.INFO <user>
pub const USER_ONLY: &[Arg] = &[USER];
/// IM.STORE <user> <stanza> [ID <id>] [DEVICES <n> <device> ...] [FORCE]
pub const STORE: &[Arg] = &[
    USER,
    Arg::string(c"stanza"),
    Arg::string(c"id").token(c"ID").optional(),
    Arg::block(
        c"devices",
        &[
            Arg::integer(c"numdevices"),
            Arg::string(c"device").multiple(),
        ],
    )
    .token(c"DEVICES")
    .optional(),
    Arg::pure_token(c"force", c"FORCE").optional(),
];
/// IM.ACK <user> <device> <id> [<id> ...] | IM.ACK <user> <device> UPTO <seq>
pub const ACK: &[Arg] = &[
    USER,
    DEVICE,
    Arg::one_of(
        c"acked",
        &[
            Arg::string(c"id").multiple(),
            Arg::integer(c"seq").token(c"UPTO"),
        ],
    ),
];
/// IM.OFFLINE.INFO <user> <device> [IDS [LIMIT <n>]]
/// The cost of the commands a container names too (`IM.OFFLINE.INFO` and
/// `IM.OFFLINE INFO` alike), for `COMMAND DOCS`.
pub const OFFLINE_INFO_COST: &CStr = c"O(log N), plus O(L) for L ids";
pub const OFFLINE_PAGE_COST: &CStr = c"O(C + log N): C messages in the page";
pub const ARCHIVE_PULL_COST: &CStr =
    c"O(C + M): C messages handed out, M mailboxes with queued messages visited";
pub const ARCHIVE_ACK_COST: &CStr = c"O(K log N): K seqs";

pub const OFFLINE_INFO: &[Arg] = &[
    USER,
    DEVICE,
    Arg::block(c"ids", &[Arg::integer(c"limit").token(c"LIMIT").optional()])
        .token(c"IDS")
        .optional(),
];
/// IM.OFFLINE.PAGE <user> <device> [AFTER <seq>] [COUNT <n>] [DELAY <from>]
pub const OFFLINE_PAGE: &[Arg] = &[
    USER,
    DEVICE,
    Arg::integer(c"seq").token(c"AFTER").optional(),
    Arg::integer(c"count").token(c"COUNT").optional(),
    Arg::string(c"from").token(c"DELAY").optional(),
];
/// IM.SWEEP [LIMIT <n>]
pub const SWEEP: &[Arg] = &[Arg::integer(c"mailboxes").token(c"LIMIT").optional()];
/// IM.ARCHIVE.PULL [COUNT <n>] [LEASE <ms>]
pub const ARCHIVE_PULL: &[Arg] = &[
    Arg::integer(c"count").token(c"COUNT").optional(),
    Arg::integer(c"ms").token(c"LEASE").optional(),
];
/// IM.ARCHIVE.ACK <user> <seq> [<seq> ...]
pub const ARCHIVE_ACK: &[Arg] = &[USER, Arg::integer(c"seq").multiple()];
/// IM.IMPORT <user> <ts> <id> <stanza> [SEQ <seq>]
pub const IMPORT: &[Arg] = &[
    USER,
    Arg::integer(c"ts"),
    Arg::string(c"id"),
    Arg::string(c"stanza"),
    Arg::integer(c"seq").token(c"SEQ").optional(),
];
/// IM.DOCTOR [JSON]
pub const DOCTOR: &[Arg] = &[Arg::pure_token(c"json", c"JSON").optional()];
/// IM.APPLY <user> <effects> [<stanza>]
pub const APPLY: &[Arg] = &[
    USER,
    Arg::string(c"effects"),
    Arg::string(c"stanza").optional(),
];
/// IM.LOAD <user> HEAD|MSGS <blob>
pub const LOAD: &[Arg] = &[
    USER,
    Arg::one_of(
        c"part",
        &[
            Arg::pure_token(c"head", c"HEAD"),
            Arg::pure_token(c"msgs", c"MSGS"),
        ],
    ),
    Arg::string(c"blob"),
];

/// `args` as a command's syntax line writes them (`docs/commands.md`,
/// `redis-cli`'s `HELP`): names in lower case, tokens in upper case,
/// `[optional]`, `name [name ...]` for a repeated one, `(a | b)` for one
/// of several; `user device [IDS [LIMIT limit]]`.
pub fn syntax(args: &[Arg]) -> String {
    args.iter().map(render).collect::<Vec<_>>().join(" ")
}

fn render(a: &Arg) -> String {
    let name = a.name.to_string_lossy();
    let token = a.token.map(|t| t.to_string_lossy());
    let body = match a.kind {
        ArgKind::PureToken => token.map_or_else(|| name.to_string(), |t| t.to_string()),
        ArgKind::OneOf(subs) => {
            let alts: Vec<String> = subs.iter().map(render).collect();
            format!("({})", alts.join(" | "))
        }
        ArgKind::Block(subs) => match token {
            Some(t) => format!("{t} {}", syntax(subs)),
            None => syntax(subs),
        },
        ArgKind::Key | ArgKind::String | ArgKind::Integer => match token {
            Some(t) => format!("{t} {name}"),
            None => name.to_string(),
        },
    };
    let body = if a.multiple {
        format!("{body} [{body} ...]")
    } else {
        body
    };
    if a.optional {
        format!("[{body}]")
    } else {
        body
    }
}

/// No command tips.
pub const NO_TIPS: Option<&CStr> = None;
/// The keyless commands that act on the node they are sent to, whose
/// replies differ from node to node: a cluster client that reads tips
/// sends them to every primary (as the docs ask) and leaves the replies
/// apart.
pub const PER_NODE: Option<&CStr> =
    Some(c"request_policy:all_shards response_policy:special nondeterministic_output");
/// `IM.ARCHIVE.PULL`: per node like [`PER_NODE`]; its replies are lists
/// of queued messages, which a client that reads tips may concatenate
/// (each message is acked by its user, on the node that owns it).
pub const PER_NODE_LIST: Option<&CStr> = Some(c"request_policy:all_shards nondeterministic_output");

/// ACL categories (besides `@write` or `@read`, and `@slow`, which
/// `wrapper::command` adds from the flags: module commands get none
/// implied): the module's own `im` on every command, where the server can
/// add a category (`RedisModule_AddACLCategory`).
pub const ACL_IM: &str = "im";
/// Keyless commands that reach every mailbox, the archiver's, and the
/// internal ones: a key pattern cannot limit them, or a client has no
/// business calling them.
pub const ACL_ADMIN: &str = "im admin dangerous";
/// `IM.DOCTOR`: reads settings and counts, hands out no message.
pub const ACL_DOCTOR: &str = "im admin";

/// The module's own ACL category.
pub const CATEGORY: &CStr = c"im";

/// The categories to set on a command: `acl` without `im` when the server
/// has no module categories.
pub fn categories(acl: &str, with_im: bool) -> String {
    acl.split_whitespace()
        .filter(|c| with_im || *c != "im")
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[Arg]) {
        for a in args {
            match a.kind {
                ArgKind::PureToken => assert!(a.token.is_some(), "{:?}", a.name),
                ArgKind::OneOf(s) | ArgKind::Block(s) => {
                    assert!(!s.is_empty());
                    check(s)
                }
                _ => {}
            }
        }
    }

    #[test]
    fn every_table_is_well_formed() {
        for t in [
            CONNECT,
            USER_DEVICE,
            USER_ONLY,
            STORE,
            ACK,
            OFFLINE_INFO,
            OFFLINE_PAGE,
            SWEEP,
            ARCHIVE_PULL,
            ARCHIVE_ACK,
            IMPORT,
            DOCTOR,
            APPLY,
            LOAD,
        ] {
            check(t);
        }
    }

    #[test]
    fn categories_drop_im_where_the_server_has_none() {
        assert_eq!(categories(ACL_ADMIN, true), "im admin dangerous");
        assert_eq!(categories(ACL_ADMIN, false), "admin dangerous");
        assert_eq!(categories(ACL_IM, false), "");
    }

    #[test]
    fn syntax_lines_read_as_the_command_reference_writes_them() {
        assert_eq!(syntax(OFFLINE_INFO), "user device [IDS [LIMIT limit]]");
        assert_eq!(
            syntax(OFFLINE_PAGE),
            "user device [AFTER seq] [COUNT count] [DELAY from]"
        );
        assert_eq!(syntax(ARCHIVE_ACK), "user seq [seq ...]");
        assert_eq!(syntax(ARCHIVE_PULL), "[COUNT count] [LEASE ms]");
        assert_eq!(syntax(ACK), "user device (id [id ...] | UPTO seq)");
        assert_eq!(
            syntax(STORE),
            "user stanza [ID id] [DEVICES numdevices device [device ...]] [FORCE]"
        );
        assert_eq!(syntax(&[]), "");
    }
}
