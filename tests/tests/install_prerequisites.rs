//! `deploy/install-prerequisites.sh` decides whether to install libclang
//! with `libclang_status` (issue 16, item 1): a machine with LLVM but no
//! libclang has only `libclang-cpp.so.N`, which bindgen cannot use, and the
//! README's first command then failed to build. The script is sourced (it
//! then only defines its functions) and the function asked about fake
//! library directories.

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Result};
use pgrollout_tests::stack::repo_root;

fn status(dirs: &[&Path]) -> Result<String> {
    let script = repo_root().join("deploy/install-prerequisites.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg("source \"$0\" && libclang_status \"$@\"")
        .arg(&script)
        .args(dirs)
        .output()?;
    ensure!(
        out.status.success(),
        "libclang_status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn lib_dir(files: &[&str]) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for file in files {
        std::fs::write(dir.path().join(file), b"")?;
    }
    Ok(dir)
}

#[test]
fn only_libclang_cpp_is_missing_libclang() -> Result<()> {
    let llvm_only = lib_dir(&["libclang-cpp.so.14", "libclang-cpp.so", "libLLVM-14.so.1"])?;
    assert_eq!(status(&[llvm_only.path()])?, "missing");
    let empty = lib_dir(&[])?;
    assert_eq!(status(&[empty.path(), llvm_only.path()])?, "missing");
    Ok(())
}

#[test]
fn each_name_bindgen_loads_is_present() -> Result<()> {
    for name in [
        "libclang.so",
        "libclang-14.so",
        "libclang.so.14",
        "libclang-14.so.1",
    ] {
        let dir = lib_dir(&["libclang-cpp.so.14", name])?;
        assert_eq!(status(&[dir.path()])?, "present", "{name}");
    }
    let empty = lib_dir(&[])?;
    let found = lib_dir(&["libclang-14.so.1"])?;
    assert_eq!(
        status(&[empty.path(), found.path()])?,
        "present",
        "any directory"
    );
    Ok(())
}
