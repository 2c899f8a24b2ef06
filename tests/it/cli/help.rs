//! Help with an example for every command, and completion scripts, without any settings.

use super::*;

/// The binary with nothing of the environment but PATH and `vars`.
fn bare(vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edc-ingest"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn every_command_has_help_with_an_example() {
    for path in [
        &[][..],
        &["run"],
        &["migrate"],
        &["check-config"],
        &["generate"],
        &["publish"],
        &["prune"],
        &["batch"],
        &["batch", "status"],
        &["dlq"],
        &["dlq", "list"],
        &["dlq", "show"],
        &["dlq", "replay"],
        &["dlq", "purge"],
        &["status"],
        &["healthcheck"],
        &["completions"],
    ] {
        let mut args = path.to_vec();
        args.push("--help");
        let out = bare(&[], &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let help = stdout(&out);
        let example = help
            .lines()
            .find_map(|l| l.trim().strip_prefix("$ edc-ingest"))
            .unwrap_or_else(|| panic!("{path:?}: no example in\n{help}"));
        assert!(
            example.contains(&path.join(" ")),
            "{path:?}: the example runs something else: {example}"
        );
    }
    let out = bare(&[], &["dlq", "show", "--help"]);
    assert!(
        stdout(&out).contains("broker:delivery_limit"),
        "{}",
        text(&out)
    );
}

#[test]
fn completions_are_printed_for_every_shell_without_any_settings() {
    // Settings that would stop any command that reads them.
    let broken = [
        ("EDC_CONFIG", "/nonexistent/edc.yaml"),
        ("EDC__WORKERS", "many"),
    ];
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef edc-ingest"),
        ("fish", "complete -c edc-ingest"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[edc-ingest]"),
    ] {
        let out = bare(&broken, &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {marker} missing");
        for word in ["dlq", "status", "replay", "output"] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
        if matches!(shell, "bash" | "zsh" | "fish") {
            assert!(
                script.contains("delivery_limit"),
                "{shell}: the kinds are missing"
            );
        }
        assert!(stderr(&out).is_empty(), "{shell}: {}", stderr(&out));
    }
    let out = bare(&[], &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bash"), "{}", text(&out));
}
