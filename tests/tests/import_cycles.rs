//! Issue 14: no import cycle between files of different concerns. The check
//! is `deploy/check-import-cycles.py`; a cycle is tolerated only inside one
//! folder that is really one module split over files, each named here with
//! the reason.

use std::path::Path;
use std::process::Command;

/// Runs the checker on one crate's `src` with its allowed folders.
fn check(crate_src: &str, allowed: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new("python3");
    command
        .arg(root.join("deploy/check-import-cycles.py"))
        .arg(root.join(crate_src));
    for folder in allowed {
        command.args(["--allow", folder]);
    }
    let out = command.output().expect("python3 runs the checker");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "import cycles in {crate_src}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(" 0 concern cycle(s)"),
        "a cycle between concerns in {crate_src}:\n{stdout}"
    );
}

#[test]
fn the_agent_has_no_import_cycle_between_concerns() {
    // jobs/context: `fence.rs` adds methods to `JobContext` defined in its
    // mod.rs — one type split over two files.
    check("agent/src", &["jobs/context"]);
}

#[test]
fn the_controller_has_no_import_cycle_between_concerns() {
    check(
        "controller/src",
        &[
            // `impl Store` spread over files; mod.rs holds the connection
            // and the helpers every table's file uses.
            "store",
            // The facade's connection enum and its two backends (issue 18).
            "store/db",
            // mod.rs runs the gates and owns their shared verdict types;
            // each gate's file implements one of them.
            "engine/gates",
            // One ordering algorithm: read, walk, argument types, memo.
            "plan/order",
            // mod.rs is the command line's definition; commands share its
            // connection arguments, shell_docs renders it.
            "cli",
            // One delivery loop over its channels and event kinds.
            "notify",
            // The project loader and its pgTAP file reader share the
            // loader's file types.
            "project",
            // The span helpers and the pipeline they feed.
            "telemetry",
        ],
    );
}
