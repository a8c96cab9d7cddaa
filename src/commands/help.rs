//! `IM.OFFLINE HELP`, `IM.ARCHIVE HELP`: what a container's subcommands
//! are, as the server's own container commands answer `HELP` (`OBJECT
//! HELP`, `CONFIG HELP`), and as the server's error for an unknown
//! subcommand ("Try IM.OFFLINE HELP.") tells a client to ask.

use crate::command_docs::{self, Arg};
use crate::reply::Reply;
use std::ffi::CStr;

/// `HELP`'s summary in `COMMAND DOCS`.
pub const SUMMARY: &CStr =
    c"Shows the container's subcommands, their arguments and what each does.";

/// One subcommand as `HELP` lists it: its name (`c"page"`), its arguments
/// after the name, its summary.
pub type Sub = (&'static CStr, &'static [Arg], &'static CStr);

/// The lines `HELP` answers, each a simple string: the usage line, then
/// for every subcommand, `HELP` last, its syntax (name in upper case) and
/// its summary indented by four spaces.
pub fn lines(container: &CStr, subs: &[Sub]) -> Vec<String> {
    let container = container.to_string_lossy().to_uppercase();
    let mut out = vec![format!(
        "{container} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    )];
    for (name, args, summary) in subs {
        let name = name.to_string_lossy().to_uppercase();
        let syntax = command_docs::syntax(args);
        out.push(if syntax.is_empty() {
            name
        } else {
            format!("{name} {syntax}")
        });
        out.push(format!("    {}", summary.to_string_lossy()));
    }
    out.push("HELP".to_string());
    out.push("    Print this help.".to_string());
    out
}

/// [`lines`] as the reply: an array of simple strings.
pub fn reply(container: &CStr, subs: &[Sub]) -> Reply {
    Reply::Array(
        lines(container, subs)
            .into_iter()
            .map(|line| Reply::Simple(line.into()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command_docs::{ARCHIVE_ACK, ARCHIVE_PULL};

    #[test]
    fn help_names_each_subcommand_with_its_syntax_then_itself() {
        let subs: [Sub; 2] = [
            (c"pull", ARCHIVE_PULL, c"Hands out queued messages."),
            (c"ack", ARCHIVE_ACK, c"Removes confirmed messages."),
        ];
        assert_eq!(
            lines(c"im.archive", &subs),
            [
                "IM.ARCHIVE <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "PULL [COUNT count] [LEASE ms]",
                "    Hands out queued messages.",
                "ACK user seq [seq ...]",
                "    Removes confirmed messages.",
                "HELP",
                "    Print this help.",
            ]
        );
    }
}
