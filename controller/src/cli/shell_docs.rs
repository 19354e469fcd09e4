//! `pgrollout completions <shell>` and `pgrollout man --dir D`: shell
//! completions and man pages generated from the CLI definition itself, so
//! they can never disagree with what the binary accepts.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use pgrollout_shared::exit_code::ExitCode;

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for: bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// The folder to write `pgrollout.1` and one `pgrollout-<command>.1` per
    /// command into (created if missing), e.g. /usr/local/share/man/man1.
    #[arg(long)]
    dir: PathBuf,
}

/// Prints the completion script for `args.shell` on standard output.
pub fn completions(args: CompletionsArgs) -> ExitCode {
    use std::io::Write;
    let mut command = super::Cli::command();
    // Into memory first: clap_complete panics on a failed write, and a
    // closed pipe (`| head`) is no failure.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "pgrollout", &mut script);
    match std::io::stdout().write_all(&script) {
        Ok(()) => ExitCode::Success,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::Success,
        Err(error) => {
            eprintln!("pgrollout: cannot write the completion script: {error}");
            ExitCode::DeploymentFailed
        }
    }
}

/// Writes a man page for the binary and for every (nested) command.
pub fn man(args: ManArgs) -> ExitCode {
    let command = super::Cli::command();
    match write_pages(&command, &args.dir, "pgrollout") {
        Ok(count) => {
            println!(
                "pgrollout: wrote {count} man page(s) to {}",
                args.dir.display()
            );
            ExitCode::Success
        }
        Err(error) => {
            eprintln!(
                "pgrollout: cannot write man pages to {}: {error}",
                args.dir.display()
            );
            ExitCode::DeploymentFailed
        }
    }
}

fn write_pages(command: &clap::Command, dir: &Path, name: &str) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let page = command.clone().name(name.to_owned());
    let mut file = std::fs::File::create(dir.join(format!("{name}.1")))?;
    clap_mangen::Man::new(page).render(&mut file)?;
    let mut count = 1;
    for sub in command.get_subcommands().filter(|c| !c.is_hide_set()) {
        count += write_pages(sub, dir, &format!("{name}-{}", sub.get_name()))?;
    }
    Ok(count)
}
