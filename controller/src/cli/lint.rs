//! `pgrollout lint`: every problem of the whole project at once, without a
//! controller — the files that cannot be loaded (each with `file:line:col`),
//! what the offline parse leaves to the server (warnings), and whether the
//! routines that loaded can be ordered. Exit 1 when there is an error.

use std::path::PathBuf;

use pgrollout_shared::exit_code::ExitCode;

use super::connect;
use crate::plan::deploy_order;
use crate::project::Project;

#[derive(clap::Args)]
pub struct LintArgs {
    /// The procedure project: a directory with procedures/*.sql.
    #[arg(long, env = "PGROLLOUT_PROJECT", default_value = ".")]
    project: PathBuf,
}

pub fn run(args: LintArgs) -> ExitCode {
    let project = match Project::load(&args.project) {
        Ok(project) => project,
        Err(error) => {
            eprintln!("pgrollout: {}", connect::error_chain(&error));
            return ExitCode::ValidationFailed;
        }
    };
    let mut errors: Vec<String> = project
        .problems()
        .map(|problem| connect::error_chain(problem))
        .collect();
    let mut warnings: Vec<String> = project.warnings().iter().map(ToString::to_string).collect();
    match deploy_order(project.all_routines().to_vec()) {
        Ok(order) => warnings.extend(order.view().notes),
        Err(error) => errors.push(error.to_string()),
    }
    for error in &errors {
        println!("error: {error}");
    }
    for warning in &warnings {
        println!("warning: {warning}");
    }
    println!(
        "lint: {} error(s), {} warning(s); {} routine(s) in {} file(s)",
        errors.len(),
        warnings.len(),
        project.all_routines().len(),
        project.files_loaded()
    );
    if errors.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::ValidationFailed
    }
}
