//! `rtcdev completions` and `rtcdev man`: what a shell and `man` get, checked by the
//! shell and by `man` themselves where they are installed.

mod common;

use common::Sandbox;

fn stdout_of(args: &[&str]) -> String {
    let sb = Sandbox::new();
    let out = sb.rtcdev().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// bash loads the completion script and completes subcommands and their flags with it.
#[test]
fn bash_completes_subcommands_and_flags() {
    let script = stdout_of(&["completions", "bash"]);
    let complete = |words: &str, cword: usize| {
        let sb = Sandbox::new();
        std::fs::write(sb.path().join("rtcdev.bash"), &script).unwrap();
        let out = std::process::Command::new("bash")
            .current_dir(sb.path())
            .arg("-c")
            .arg(format!(
                "source ./rtcdev.bash && COMP_WORDS=({words}) && COMP_CWORD={cword} && \
                 _rtcdev rtcdev \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\" && \
                 echo \"${{COMPREPLY[@]}}\""
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(complete("rtcdev se", 1).trim(), "serve");
    let flags = complete("rtcdev serve --tu", 2);
    assert!(flags.split_whitespace().any(|f| f == "--turn"), "{flags}");
    let shells = complete("rtcdev completions ''", 2);
    for shell in ["bash", "zsh", "fish", "powershell"] {
        assert!(shells.split_whitespace().any(|s| s == shell), "{shells}");
    }
}

/// zsh and fish scripts name the command the way those shells load them.
#[test]
fn zsh_and_fish_scripts() {
    assert!(stdout_of(&["completions", "zsh"]).starts_with("#compdef rtcdev"));
    let fish = stdout_of(&["completions", "fish"]);
    assert!(fish.contains("complete -c rtcdev"), "{fish}");
    assert!(fish.contains("serve"), "{fish}");
}

/// The manual page is roff with the name, the synopsis and every subcommand; `man`
/// renders it when installed.
#[test]
fn the_manual_page() {
    let page = stdout_of(&["man"]);
    assert!(page.contains(".TH rtcdev 1"), "{page}");
    for part in [
        ".SH NAME",
        ".SH SYNOPSIS",
        "serve",
        "signal",
        "probe",
        "turn",
        "cert",
    ] {
        assert!(page.contains(part), "{part} missing:\n{page}");
    }
    if common::have("man") {
        let sb = Sandbox::new();
        let file = sb.path().join("rtcdev.1");
        std::fs::write(&file, &page).unwrap();
        let out = std::process::Command::new("man")
            .arg("-l")
            .arg(&file)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("rtcdev"), "{out:?}");
    }
}
