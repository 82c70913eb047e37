//! Text that came from the server or a store, made safe to print on the operator's terminal:
//! a guard's description or a name must not move the cursor, clear a line or draw a row of its
//! own. `--json` output needs none of this (serde escapes control characters).

/// `text` with terminal escape sequences and control characters removed, on one line: line
/// breaks and tabs become spaces (a line break would let a field start a fake row). Removed:
/// ESC sequences (CSI, OSC and the other string sequences up to their terminator, two-character
/// ones), the other C0 characters, DEL, the C1 characters (and the 8-bit CSI with its
/// parameters), and the bidirectional overrides that reorder what a line shows.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => skip_csi(&mut chars),
                // Strings (OSC, DCS, SOS, PM, APC): up to BEL or ST (ESC \ or U+009C).
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                // nF: intermediates, then a final byte; Fp, Fe, Fs: one byte.
                Some(' '..='/') => {
                    while chars.next_if(|c| matches!(c, ' '..='/')).is_some() {}
                    chars.next();
                }
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            c if c.is_control() => {}
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c => out.push(c),
        }
    }
    out
}

fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars
        .next_if(|c| matches!(c, '0'..='?' | ' '..='/'))
        .is_some()
    {}
    // The final byte, if it is one (anything else is kept, to be judged on its own).
    chars.next_if(|c| matches!(c, '@'..='~'));
}

fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\x07' | '\u{9c}' => return,
            '\x1b' => {
                chars.next_if_eq(&'\\');
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn plain_text_is_kept() {
        assert_eq!(
            shown("Broken door, bâtiment B – 2nd floor"),
            "Broken door, bâtiment B – 2nd floor"
        );
    }

    #[test]
    fn control_characters_and_sequences_are_removed() {
        for (given, expected) in [
            ("a\x1b[2K\rb", "a b"),
            ("a\x1b[1;31mred\x1b[0m", "ared"),
            ("a\x1b]0;title\x07b", "ab"),
            ("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b", "alinkb"),
            ("a\x1bPdata\x1b\\b", "ab"),
            ("a\x1b(Bb", "ab"),
            ("a\x1bcb", "ab"),
            ("a\u{9b}2Kb", "ab"),
            ("a\u{85}\u{7f}\x00\x08b", "ab"),
            ("a\nb\tc", "a b c"),
            ("a\u{202e}b", "ab"),
            ("trailing\x1b", "trailing"),
            ("\x1b[", ""),
        ] {
            let got = shown(given);
            assert_eq!(got, expected, "{given:?}");
            assert!(!got.chars().any(char::is_control), "{given:?}");
        }
    }
}
