//! Reading the command line: clap's parse with weft's own one-line errors (naming the `WEFT_*`
//! variable when that is what the operator set), the flags that came from variables, and the
//! refusal of empty or misspelt `WEFT_*` variables for `weft run`.

use std::ffi::{OsStr, OsString};

use clap::error::{ContextKind, ErrorKind};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

use super::{Cli, Command};
use crate::config::env_var;

/// Why the command line did not give a command to run.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// A usage or variable error: one line, exit status 2.
    #[error("{0}")]
    Usage(String),
    /// `--help`, `--version` or a bare `weft`: clap's text, printed as is, with this exit status.
    #[error("{error}")]
    Display { error: Box<clap::Error>, code: u8 },
}

/// A parsed command line and the one-line warnings to log once logging is set up.
#[derive(Debug)]
pub struct Parsed {
    pub cli: Cli,
    pub warnings: Vec<String>,
}

/// Parses `argv` (program name first) with the environment `env`.
pub fn parse(
    argv: impl IntoIterator<Item = OsString>,
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Parsed, ParseError> {
    let argv: Vec<OsString> = argv.into_iter().collect();
    let mut env: Vec<(String, OsString)> = env
        .into_iter()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
        .filter(|(k, _)| k.starts_with("WEFT_"))
        .collect();
    env.sort();
    let matches = match Cli::command().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) => {
            return Err(match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ParseError::Display {
                    error: Box::new(e),
                    code: 0,
                },
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ParseError::Display {
                    error: Box::new(e),
                    code: 2,
                },
                _ => ParseError::Usage(render(&e, &argv, &env)),
            });
        }
    };
    let mut cli =
        Cli::from_arg_matches(&matches).map_err(|e| ParseError::Usage(render(&e, &argv, &env)))?;
    let mut warnings = Vec::new();
    if let (Command::Run(args), Some(("run", sub))) = (&mut cli.command, matches.subcommand()) {
        let run = Cli::command();
        let run = run
            .find_subcommand("run")
            .ok_or_else(|| ParseError::Usage("no run command".into()))?;
        let mut run_vars = Vec::new();
        for arg in run.get_arguments() {
            let (Some(long), Some(var)) = (arg.get_long(), arg.get_env()) else {
                continue;
            };
            let id = arg.get_id().as_str();
            let source = sub.value_source(id);
            if source == Some(ValueSource::EnvVariable) {
                args.from_env.push(long.to_string());
            }
            // clap skips empty variables: an empty one would silently mean the default.
            if source != Some(ValueSource::CommandLine)
                && env
                    .iter()
                    .any(|(k, v)| OsStr::new(k) == var && v.to_string_lossy().trim().is_empty())
            {
                let var = var.to_string_lossy();
                return Err(ParseError::Usage(format!(
                    "invalid {var} \"\": empty value (unset {var} to use the default)"
                )));
            }
            run_vars.push(var.to_string_lossy().into_owned());
        }
        check_variables(&env, &run_vars, &known_variables(), &mut warnings)?;
    }
    Ok(Parsed { cli, warnings })
}

/// Variables the library reads itself, not through a flag.
const LIBRARY_VARIABLES: &[&str] = &[
    // `off`: keep the gossip loopback sockets out of a private namespace (cluster::transport).
    "WEFT_GOSSIP_NETNS",
];

/// Every `WEFT_*` variable any weft command reads.
fn known_variables() -> Vec<String> {
    let cmd = Cli::command();
    cmd.get_subcommands()
        .flat_map(|s| s.get_arguments())
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .chain(LIBRARY_VARIABLES.iter().map(|v| v.to_string()))
        .collect()
}

/// Unknown `WEFT_*` variables: a near miss of a `weft run` variable (`WEFT_SEED`,
/// `WEFT_NETWROK`, `WEFT_CLUSTER_KEY`) is refused, since the setting it meant would silently
/// not apply (a node started without its seeds forms a mesh of its own). Other unknown names
/// are only warned about: scripts and test harnesses keep their own settings under `WEFT_`
/// (`WEFT_BIN`, `WEFT_REQUIRE_NETNS`), and refusing those would break them.
fn check_variables(
    env: &[(String, OsString)],
    run_vars: &[String],
    known: &[String],
    warnings: &mut Vec<String>,
) -> Result<(), ParseError> {
    for (name, _) in env {
        if known.iter().any(|k| k == name) {
            continue;
        }
        let suffix = &name["WEFT_".len()..];
        let near = run_vars.iter().find(|var| {
            let var_suffix = &var["WEFT_".len()..];
            crate::config::suggest_distance(suffix, var_suffix) <= 1
                || var_suffix.starts_with(&format!("{suffix}_"))
                || suffix.starts_with(&format!("{var_suffix}_"))
        });
        match near {
            Some(var) => {
                return Err(ParseError::Usage(format!(
                    "unknown variable {name} (did you mean {var}?): a misspelt setting would \
                     silently not apply"
                )));
            }
            None => warnings.push(format!("ignoring {name}: not a weft variable")),
        }
    }
    Ok(())
}

/// clap's error as one line: `invalid WEFT_INSECURE "maybe": expected true or false`.
fn render(e: &clap::Error, argv: &[OsString], env: &[(String, OsString)]) -> String {
    let ctx = |kind| e.get(kind).map(|v| v.to_string());
    // "--insecure [<INSECURE>]" -> "--insecure"
    let flag = ctx(ContextKind::InvalidArg)
        .map(|a| a.split([' ', '=']).next().unwrap_or_default().to_string());
    match e.kind() {
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            let flag = flag.unwrap_or_else(|| "value".into());
            let value = ctx(ContextKind::InvalidValue).unwrap_or_default();
            let on_command_line = argv.iter().any(|a| {
                let a = a.to_string_lossy();
                a == flag || a.starts_with(&format!("{flag}="))
            });
            let var = env_var(&flag);
            let field =
                if flag.starts_with("--") && !on_command_line && env.iter().any(|(k, _)| *k == var)
                {
                    var
                } else {
                    flag
                };
            if value.trim().is_empty() {
                return if field.starts_with("WEFT_") {
                    format!("invalid {field} \"\": empty value (unset {field} to use the default)")
                } else {
                    format!("invalid {field} \"\": empty value (give a value, or omit the flag)")
                };
            }
            let source = std::error::Error::source(e).map(|s| s.to_string());
            let valid = ctx(ContextKind::ValidValue).filter(|v| !v.trim().is_empty());
            let reason = match (source.as_deref(), valid) {
                (Some("value was not a boolean"), _) => {
                    "expected true or false (or yes/no, on/off, 1/0)".to_string()
                }
                (_, Some(valid)) => format!("expected one of {valid}"),
                (Some(s), None) => s.to_string(),
                (None, None) => "invalid value".to_string(),
            };
            format!("invalid {field} {value:?}: {reason}")
        }
        ErrorKind::UnknownArgument => {
            let arg = flag.unwrap_or_default();
            match ctx(ContextKind::SuggestedArg) {
                Some(s) => format!("unknown flag {arg} (did you mean {s}?)"),
                None => format!("unknown flag {arg} (see --help)"),
            }
        }
        ErrorKind::InvalidSubcommand => {
            let sub = ctx(ContextKind::InvalidSubcommand).unwrap_or_default();
            match ctx(ContextKind::SuggestedSubcommand) {
                Some(s) => format!("unknown command {sub} (did you mean {s}?)"),
                None => format!("unknown command {sub} (see --help)"),
            }
        }
        _ => {
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or("invalid command line");
            line.trim_start_matches("error: ").trim().to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // clap reads variables from the process environment, so the variable cases run the real
    // binary (tests/cli_bad_inputs.rs); these need none.
    fn parse_err(argv: &[&str]) -> String {
        match parse(argv.iter().map(OsString::from), []) {
            Err(ParseError::Usage(line)) => line,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn one_line_errors() {
        assert_eq!(
            parse_err(&["weft", "run", "--insecure=maybe"]),
            "unexpected value 'maybe' for '--insecure' found; no more were expected"
        );
        assert_eq!(
            parse_err(&["weft", "run", "--seed", "a:1"]),
            "unknown flag --seed (did you mean --seeds?)"
        );
        assert_eq!(
            parse_err(&["weft", "statsu"]),
            "unknown command statsu (did you mean status?)"
        );
        assert!(!parse_err(&["weft", "run", "--listen"]).contains('\n'));
    }

    #[test]
    fn unknown_variables() {
        let env = |names: &[&str]| -> Vec<(String, OsString)> {
            names
                .iter()
                .map(|n| (n.to_string(), OsString::new()))
                .collect()
        };
        let run_vars = vec![
            "WEFT_SEEDS".to_string(),
            "WEFT_CLUSTER_KEY_FILE".to_string(),
        ];
        let known = vec!["WEFT_SEEDS".to_string(), "WEFT_JSON".to_string()];
        let mut warnings = Vec::new();
        for typo in ["WEFT_SEED", "WEFT_SEDES", "WEFT_CLUSTER_KEY"] {
            let e = check_variables(&env(&[typo]), &run_vars, &known, &mut warnings);
            assert!(matches!(e, Err(ParseError::Usage(_))), "{typo}");
        }
        check_variables(
            &env(&["WEFT_BIN", "WEFT_JSON"]),
            &run_vars,
            &known,
            &mut warnings,
        )
        .unwrap();
        assert_eq!(warnings, vec!["ignoring WEFT_BIN: not a weft variable"]);
    }
}
