//! `serve --config FILE`: settings from a TOML file (TOML 1.0, the `toml` crate), one key
//! per `serve` flag, named by the flag's long name (`max-conns = 100000`,
//! `history-ttl = "10m"`, `directed = true`).
//!
//! Precedence, highest first: a flag on the command line, its `UC_*` environment variable,
//! the file, the flag's default. The file's keys become command-line arguments appended after
//! the given ones (`--max-conns=100000`), only for flags that neither the command line nor
//! the environment set, so clap parses and validates every value in one place, as if typed.
//! A key that names no `serve` flag stops the start with an error naming it and the file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, Args, Command, FromArgMatches};

use super::ServeArgs;

/// The `serve` subcommand as clap sees it (its flags only).
fn serve_command() -> Command {
    ServeArgs::augment_args(Command::new("serve"))
}

/// `argv` (a whole command line: program, subcommand, flags) with the `--config` file's
/// settings appended as flags, when the subcommand is `serve` and a file is named (by
/// `--config` or `UC_CONFIG`); otherwise `argv` unchanged (a bad command line is left for
/// clap's own parse to report).
///
/// Errors: the file cannot be read or is not TOML; a key is not a `serve` flag (the error
/// names it); a value is not a string, number or boolean, or a boolean flag's is not `true`
/// or `false`.
pub fn with_file_args(argv: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    if argv.get(1).map(|s| s.as_os_str()) != Some("serve".as_ref()) {
        return Ok(argv);
    }
    let cmd = serve_command();
    let Ok(matches) = cmd.clone().try_get_matches_from(&argv[1..]) else {
        return Ok(argv);
    };
    let Some(path) = matches.get_one::<PathBuf>("config") else {
        return Ok(argv);
    };
    let extra = file_args(&cmd, &matches, path)?;
    let mut argv = argv;
    argv.extend(extra);
    Ok(argv)
}

/// Parses a `serve` command line (`argv[0]` is the program, `argv[1]` `serve`) with its
/// `--config` file applied. Errors: [`with_file_args`]'s, and clap's for a bad flag or value.
pub fn parse_serve(argv: Vec<OsString>) -> anyhow::Result<ServeArgs> {
    let argv = with_file_args(argv)?;
    let matches = serve_command().try_get_matches_from(argv.get(1..).unwrap_or_default())?;
    Ok(ServeArgs::from_arg_matches(&matches)?)
}

/// The flags the file at `path` sets that the command line and environment do not.
fn file_args(
    cmd: &Command,
    matches: &clap::ArgMatches,
    path: &Path,
) -> anyhow::Result<Vec<OsString>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--config {shown}: cannot read it: {e}"))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("--config {shown}: not TOML: {e}"))?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
            .ok_or_else(|| {
                anyhow::anyhow!("--config {shown}: unknown key `{key}` (not a `serve` flag; see `uring-comet serve --help`)")
            })?;
        let set_here = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if set_here {
            continue;
        }
        let is_switch = matches!(arg.get_action(), ArgAction::SetTrue);
        match (value, is_switch) {
            (toml::Value::Boolean(true), true) => out.push(format!("--{key}").into()),
            (toml::Value::Boolean(false), true) => {}
            (_, true) => anyhow::bail!("--config {shown}: `{key}` must be true or false"),
            (toml::Value::String(s), false) => out.push(format!("--{key}={s}").into()),
            (toml::Value::Integer(n), false) => out.push(format!("--{key}={n}").into()),
            (toml::Value::Float(x), false) => out.push(format!("--{key}={x}").into()),
            (toml::Value::Boolean(b), false) => out.push(format!("--{key}={b}").into()),
            _ => anyhow::bail!("--config {shown}: `{key}` must be a string, a number or a boolean"),
        }
    }
    Ok(out)
}
