//! Names shown on a terminal the way `ls` shows them (GNU coreutils' shell-escape style), so a
//! name holding terminal escapes, newlines or invalid UTF-8 is printed as something a shell
//! would read back, never as raw control bytes the terminal would obey.

/// Characters that never need quoting.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "%+,-./:=@_".contains(c) || (!c.is_ascii() && !c.is_control())
}

/// `name` as `ls` would print it: unchanged when every character is plain, in single quotes
/// when it holds spaces or shell characters, with `$'\NNN'` for control characters and bytes
/// that are not UTF-8.
pub fn quote(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    let valid = matches!(text, std::borrow::Cow::Borrowed(_));
    if valid && !name.is_empty() && text.chars().all(is_plain) {
        return text.into_owned();
    }
    let mut out = String::new();
    let mut quoted = false;
    let mut rest = name;
    while !rest.is_empty() {
        let (ch, len) = next_char(rest);
        match ch {
            Some(c) if !c.is_control() => {
                if !quoted {
                    out.push('\'');
                    quoted = true;
                }
                if c == '\'' {
                    out.push_str("'\\''");
                } else {
                    out.push(c);
                }
            }
            _ => {
                if quoted {
                    out.push('\'');
                    quoted = false;
                }
                out.push_str("$'");
                for byte in &rest[..len] {
                    out.push_str(&format!("\\{byte:03o}"));
                }
                out.push('\'');
            }
        }
        rest = &rest[len..];
    }
    if quoted {
        out.push('\'');
    }
    if out.is_empty() {
        out.push_str("''");
    }
    out
}

/// The first character of `bytes` and its length, or `None` and 1 for a byte that does not
/// start valid UTF-8.
fn next_char(bytes: &[u8]) -> (Option<char>, usize) {
    let end = bytes.len().min(4);
    for len in 1..=end {
        if let Ok(s) = std::str::from_utf8(&bytes[..len]) {
            return (s.chars().next(), len);
        }
    }
    (None, 1)
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn names_are_quoted_as_ls_quotes_them() {
        assert_eq!(quote(b"plain-name_1.txt"), "plain-name_1.txt");
        assert_eq!(quote("grüße".as_bytes()), "grüße");
        assert_eq!(quote(b"with space"), "'with space'");
        assert_eq!(quote(b"it's"), "'it'\\''s'");
        assert_eq!(quote(b"a\x1b[31mred"), "'a'$'\\033''[31mred'");
        assert_eq!(quote(b"line\nbreak"), "'line'$'\\012''break'");
        assert_eq!(quote(b"bad\xffbyte"), "'bad'$'\\377''byte'");
    }
}
