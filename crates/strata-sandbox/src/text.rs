//! Bounded quoting of text: cutting a string to a byte budget at a
//! character boundary, for messages that quote files or guest output.

/// The longest prefix of `text` of at most `bytes_max` bytes that ends at
/// a character boundary.
pub fn truncate_at_char_boundary(text: &str, bytes_max: usize) -> &str {
    if text.len() <= bytes_max {
        return text;
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` cut to at most `bytes_max` bytes (at a character boundary) with
/// the number of bytes left out, for quoting file contents in messages.
pub fn elide(text: &str, bytes_max: usize) -> String {
    let kept = truncate_at_char_boundary(text, bytes_max);
    if kept.len() == text.len() {
        return text.to_string();
    }
    format!("{kept}… ({} more bytes)", text.len() - kept.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_ends_at_a_character() {
        assert_eq!(truncate_at_char_boundary("héllo", 2), "h");
        assert_eq!(truncate_at_char_boundary("héllo", 3), "hé");
    }

    #[test]
    fn elide_keeps_short_text_and_cuts_long_text_at_a_character() {
        assert_eq!(elide("short", 10), "short");
        assert_eq!(elide("ééé", 3), "é… (4 more bytes)");
        assert!(elide(&"x".repeat(1 << 20), 200).len() < 200 + 32);
    }
}
