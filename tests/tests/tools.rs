//! `infra/tools.sh check` against prepared directory trees: the install
//! script must see libclang exactly where bindgen (clang-sys) would, or a
//! fresh machine skips the install and the RocksDB build fails later.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The first bytes of a 64-bit and of a 32-bit ELF object: all clang-sys
/// reads of a candidate before accepting it.
const ELF64: &[u8] = b"\x7fELF\x02\x01\x01\x00";
const ELF32: &[u8] = b"\x7fELF\x01\x01\x01\x00";

struct Tree {
    root: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        Self {
            root: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn file(&self, relative: &str, contents: &[u8]) -> &Self {
        let path = self.root.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
        self
    }

    /// What Debian's libclang-common-14-dev adds: clang's own headers.
    fn clang_headers(&self) -> &Self {
        self.file(
            "usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h",
            b"/* builtin */",
        )
    }

    /// Runs the libclang check with the environment cleared of everything
    /// that would make clang-sys look elsewhere, plus `environment`.
    fn check_libclang(&self, environment: &[(&str, String)]) -> (bool, String) {
        let mut command = check_command("libclang");
        command
            .env("RAPPORT_TOOLS_ROOT", self.root.path())
            .env_remove("LIBCLANG_PATH")
            .env_remove("LD_LIBRARY_PATH")
            .env("LLVM_CONFIG_PATH", self.root.path().join("no-llvm-config"));
        for (name, value) in environment {
            command.env(name, value);
        }
        run_check("libclang", command)
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }
}

/// `infra/tools.sh check <requirement>`, its environment still to set.
fn check_command(requirement: &str) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/tools.sh");
    let mut command = Command::new("bash");
    command.arg(script).args(["check", requirement]);
    command
}

/// Runs a check: whether `requirement` is present, and the report.
fn run_check(requirement: &str, mut command: Command) -> (bool, String) {
    let output = command.output().expect("run infra/tools.sh");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let present = match output.status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("tools.sh check exited with {other:?}: {stdout}{stderr}"),
    };
    assert_eq!(
        stdout.starts_with(&format!("present {requirement}:")),
        present,
        "exit status and report disagree: {stdout}"
    );
    (present, stdout)
}

#[test]
fn libclang_cpp_alone_is_not_libclang() {
    // A fresh Debian 12 machine with LLVM 14's C++ library but no libclang-dev.
    let tree = Tree::new();
    tree.file("usr/lib/x86_64-linux-gnu/libclang-cpp.so.14", ELF64)
        .file("usr/lib/llvm-14/lib/libclang-cpp.so.14", ELF64)
        .file("usr/lib/llvm-14/lib/libclang-cpp.so", ELF64)
        .clang_headers();
    let (present, report) = tree.check_libclang(&[]);
    assert!(!present, "libclang-cpp was taken for libclang: {report}");
    assert!(
        report.contains("no libclang.so or libclang-N.so"),
        "{report}"
    );
}

#[test]
fn a_versioned_libclang_with_its_headers_is_present() {
    let tree = Tree::new();
    tree.file("usr/lib/x86_64-linux-gnu/libclang-cpp.so.14", ELF64)
        .file("usr/lib/x86_64-linux-gnu/libclang-14.so", ELF64)
        .clang_headers();
    let (present, report) = tree.check_libclang(&[]);
    assert!(present, "{report}");
    assert!(
        report.contains("usr/lib/x86_64-linux-gnu/libclang-14.so"),
        "{report}"
    );
}

#[test]
fn debians_runtime_library_name_is_enough_for_the_runtime_loader() {
    // libclang1-14 ships only libclang.so.1 under the LLVM directory;
    // clang-sys's `runtime` feature accepts such suffixed names.
    let tree = Tree::new();
    tree.file("usr/lib/llvm-14/lib/libclang.so.1", ELF64)
        .clang_headers();
    let (present, report) = tree.check_libclang(&[]);
    assert!(present, "{report}");
}

#[test]
fn libclang_without_clangs_headers_is_missing() {
    // bindgen cannot parse RocksDB's header without clang's stddef.h.
    let tree = Tree::new();
    tree.file("usr/lib/x86_64-linux-gnu/libclang-14.so", ELF64);
    let (present, report) = tree.check_libclang(&[]);
    assert!(!present, "{report}");
    assert!(report.contains("stddef.h"), "{report}");
}

#[test]
fn a_32_bit_libclang_does_not_count() {
    let tree = Tree::new();
    tree.file("usr/lib/i386-linux-gnu/libclang-14.so", ELF32)
        .clang_headers();
    let (present, report) = tree.check_libclang(&[]);
    assert!(!present, "{report}");
}

#[test]
fn libclang_path_is_the_only_place_looked_at_when_set() {
    let tree = Tree::new();
    tree.file("usr/lib/x86_64-linux-gnu/libclang-14.so", ELF64)
        .file("opt/llvm-18/lib/libclang.so", ELF64)
        .file("opt/empty/README", b"")
        .clang_headers();
    let (present, report) = tree.check_libclang(&[("LIBCLANG_PATH", "/opt/llvm-18/lib".into())]);
    assert!(present, "{report}");
    assert!(report.contains("opt/llvm-18/lib/libclang.so"), "{report}");

    // clang-sys searches nothing else when LIBCLANG_PATH names a directory
    // without a libclang, so neither does the check.
    let (present, report) = tree.check_libclang(&[("LIBCLANG_PATH", "/opt/empty".into())]);
    assert!(!present, "{report}");
}

#[test]
fn llvm_configs_prefix_is_searched() {
    let tree = Tree::new();
    tree.file("opt/llvm-17/lib/libclang.so", ELF64)
        .clang_headers();
    let (present, _) = tree.check_libclang(&[]);
    assert!(!present, "/opt is not a default search directory");

    let llvm_config = tree.path("bin/llvm-config");
    tree.file("bin/llvm-config", b"#!/bin/sh\necho /opt/llvm-17\n");
    Command::new("chmod")
        .arg("+x")
        .arg(&llvm_config)
        .status()
        .expect("chmod");
    let (present, report) =
        tree.check_libclang(&[("LLVM_CONFIG_PATH", llvm_config.display().to_string())]);
    assert!(present, "{report}");
    assert!(report.contains("opt/llvm-17/lib/libclang.so"), "{report}");
}

#[test]
fn the_chromium_check_looks_for_the_chromium_the_browser_tests_run() {
    let tree = Tree::new();
    tree.file("bin/chromium-build", b"#!/bin/sh\n");
    let chromium = tree.path("bin/chromium-build");
    Command::new("chmod")
        .arg("+x")
        .arg(&chromium)
        .status()
        .expect("chmod");
    let mut command = check_command("chromium");
    command.env("RAPPORT_CHROMIUM", &chromium);
    let (present, report) = run_check("chromium", command);
    assert!(present, "{report}");
    assert!(report.contains("bin/chromium-build"), "{report}");

    let mut command = check_command("chromium");
    command.env("RAPPORT_CHROMIUM", tree.path("bin/no-chromium"));
    let (present, report) = run_check("chromium", command);
    assert!(!present, "{report}");
}
