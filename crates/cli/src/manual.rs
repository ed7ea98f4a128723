//! `tcpchat completions SHELL` and `tcpchat man`: generated from the clap definitions, so
//! they always say what this binary accepts. The Debian package runs both at build time
//! (`scripts/package-deb.sh`); anyone else can pipe them where their shell or `man` looks.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_name = "SHELL")]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {}

/// Writes the completion script for `args.shell` to stdout.
pub fn completions<C: CommandFactory>(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = C::command();
    let name = cmd.get_name().to_owned();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, name, &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("cannot write the completions to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the man page, tcpchat(1) in roff with every subcommand's options, to stdout.
pub fn man<C: CommandFactory>(_args: &ManArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = C::command();
    cmd.build();
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    // One section per subcommand, with its options: `man tcpchat` is the whole reference.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let title = sub.get_name().to_uppercase();
        writeln!(out, ".SH \"TCPCHAT {title}\"")?;
        let sub_man = clap_mangen::Man::new(sub.clone());
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            writeln!(out, "{}", roff_escape(&about.to_string()))?;
        }
        writeln!(out, ".PP\n\\fBtcpchat {}\\fR [OPTIONS]", sub.get_name())?;
        let mut options = Vec::new();
        sub_man.render_options_section(&mut options)?;
        // Its own ".SH OPTIONS" heading would end our section: keep the entries only.
        let options = String::from_utf8_lossy(&options).replacen(".SH OPTIONS\n", "", 1);
        out.write_all(options.as_bytes())?;
    }
    man.render_version_section(&mut out)?;
    std::io::stdout()
        .write_all(&out)
        .context("cannot write the man page to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Text safe as a roff paragraph: a leading '.' or '\'' would be read as a request.
fn roff_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
