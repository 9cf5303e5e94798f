//! The CLI's contract for input it must refuse before touching anything:
//! exit code 1, `error: ...` on stderr, no state written. Needs no root.

use std::{path::PathBuf, process::Command};

fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("weft-cli-test-{}-{tag}", std::process::id()))
}

fn weft(state_dir: &PathBuf, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .env_remove("WEFT_NETNS")
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--bpffs")
        .arg(state_dir.join("no-bpffs-needed"))
        .args(args)
        .output()
        .expect("weft binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_subnets_and_names_are_refused_without_state() {
    let dir = scratch("bad");
    for (args, expect) in [
        (
            vec!["network", "create", "x", "--subnet", "10.1.0.5/24"],
            "host bits",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.1.0.0/33"],
            "invalid subnet",
        ),
        (
            vec!["network", "create", "x", "--subnet", "banana"],
            "invalid subnet",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.1.0.0/31"],
            "too small",
        ),
        (
            vec!["network", "create", "a b", "--subnet", "10.1.0.0/24"],
            "invalid network name",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.1.0.0/24",
                "--gateway",
                "10.2.0.1",
            ],
            "not a host address",
        ),
    ] {
        let (code, _, err) = weft(&dir, &args);
        assert_eq!(code, 1, "weft {args:?} should exit 1, stderr: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(expect),
            "weft {args:?}: expected an error containing {expect:?}, got {err:?}"
        );
    }
    assert!(
        !dir.join("state.json").exists(),
        "refused commands must not write state"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn read_only_commands_work_on_an_empty_node() {
    let dir = scratch("empty");
    let (code, out, err) = weft(&dir, &["network", "ls", "-o", "json"]);
    assert_eq!(code, 0, "network ls failed: {err}");
    assert_eq!(out.trim(), "[]", "an empty node lists no networks");
    let (code, out, err) = weft(&dir, &["endpoint", "ls", "-o", "json"]);
    assert_eq!(code, 0, "endpoint ls failed: {err}");
    assert_eq!(out.trim(), "[]");
    let (code, _, err) = weft(&dir, &["network", "inspect", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("network 'nope' does not exist"), "got {err:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
