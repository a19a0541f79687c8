//! Text from outside the node (a client's correlation id or `reply_to`, a
//! guest's output) written into the log with its control characters
//! escaped, so that it cannot forge log lines or terminal sequences.

use std::fmt;

/// Displays its text with every control character escaped (`\n`,
/// `\u{1b}`); other text, any script included, is written as it is.
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Runs between control characters are written whole: this is on
        // every request's span.
        let mut rest = self.0;
        while let Some((at, control)) = rest.char_indices().find(|(_, c)| c.is_control()) {
            f.write_str(&rest[..at])?;
            write!(f, "{}", control.escape_default())?;
            rest = &rest[at + control.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn control_characters_are_escaped_and_nothing_else() {
        assert_eq!(Escaped("corr-41").to_string(), "corr-41");
        assert_eq!(Escaped("é ü 字").to_string(), "é ü 字");
        assert_eq!(
            Escaped("a\nINFO fake line\r\u{1b}[2J").to_string(),
            r"a\nINFO fake line\r\u{1b}[2J"
        );
    }
}
