//! Text from outside the node (a client's correlation id or `reply_to`, a
//! guest's output) written into the log with its control characters
//! escaped, so that it cannot forge log lines or terminal sequences.

use std::fmt;

/// Displays its text with every control character escaped (`\n`,
/// `\u{1b}`); other text, any script included, is written as it is.
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
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
