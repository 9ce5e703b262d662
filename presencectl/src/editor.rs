//! Writing an answer in the human's editor, like `git commit`: the thread is quoted in
//! `#` comment lines below an empty first line; comment lines are dropped afterwards.

use std::io::Write;
use std::process::Command;

/// Opens `$VISUAL`, else `$EDITOR`, else `vi` on a file holding `quoted` as comments and
/// returns what the human wrote (without the comments).
pub fn compose(quoted: &str) -> Result<String, String> {
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .or_else(|| std::env::var("EDITOR").ok().filter(|e| !e.trim().is_empty()))
        .unwrap_or_else(|| "vi".to_owned());
    let mut file = tempfile::Builder::new()
        .prefix("presence-answer-")
        .suffix(".txt")
        .tempfile()
        .map_err(|e| format!("cannot create a file for the editor: {e}"))?;
    let mut template = String::from("\n");
    for line in quoted.lines() {
        template.push_str("# ");
        template.push_str(line);
        template.push('\n');
    }
    file.write_all(template.as_bytes())
        .map_err(|e| format!("writing {}: {e}", file.path().display()))?;
    file.flush().map_err(|e| format!("writing {}: {e}", file.path().display()))?;
    // Through the shell, as git does, so that EDITOR="code --wait" works.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("presencectl-editor")
        .arg(file.path())
        .status()
        .map_err(|e| format!("cannot run the editor {editor:?}: {e}"))?;
    if !status.success() {
        return Err(format!("the editor {editor:?} failed ({status}); nothing sent"));
    }
    let written = std::fs::read_to_string(file.path())
        .map_err(|e| format!("reading {}: {e}", file.path().display()))?;
    Ok(strip_comments(&written))
}

pub fn strip_comments(text: &str) -> String {
    text.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n").trim().to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn comments_are_dropped() {
        assert_eq!(super::strip_comments("Thanks!\n\n# alice: hi\n#\n"), "Thanks!");
        assert_eq!(super::strip_comments("a\n# x\nb"), "a\nb");
    }
}
