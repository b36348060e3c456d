//! Every command's `--help` shows an example, and the shell completions name every command.

mod common;

use common::Env;

/// The commands `cairn --help` lists.
fn commands(env: &Env) -> Vec<String> {
    let help = env.ok(&["--help"]);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

#[test]
fn every_command_has_help_with_an_example() {
    let env = Env::new();
    let commands = commands(&env);
    assert!(commands.len() >= 19, "{commands:?}");
    for command in &commands {
        let help = env.ok(&[command, "--help"]);
        assert!(
            help.contains("Example"),
            "cairn {command} --help has no example:\n{help}"
        );
    }
}

#[test]
fn completions_name_every_command_and_bash_loads_them() {
    let env = Env::new();
    let commands = commands(&env);
    for shell in ["bash", "zsh", "fish"] {
        let script = env.ok(&["completions", shell]);
        for command in &commands {
            assert!(script.contains(command.as_str()), "{shell} lacks {command}");
        }
    }
    let file = env.path("cairn.bash");
    std::fs::write(&file, env.ok(&["completions", "bash"])).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p cairn", file.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("-F _cairn cairn"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}
