//! HTML5 named character references, from the WHATWG list as the `htmlize` crate ships it.

/// Returns the text a named character reference (without `&` and `;`) stands for.
pub(crate) fn lookup(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() + 2 > htmlize::ENTITY_MAX_LENGTH {
        return None;
    }
    let mut key = Vec::with_capacity(name.len() + 2);
    key.push(b'&');
    key.extend_from_slice(name.as_bytes());
    key.push(b';');
    htmlize::ENTITIES.get(key.as_slice()).and_then(|v| std::str::from_utf8(v).ok())
}

#[cfg(test)]
mod tests {
    use super::lookup;

    #[test]
    fn named_references() {
        assert_eq!(lookup("nbsp"), Some("\u{a0}"));
        assert_eq!(lookup("uuml"), Some("ü"));
        assert_eq!(lookup("AElig"), Some("Æ"));
        assert_eq!(lookup("NotNestedGreaterGreater"), Some("\u{2AA2}\u{338}"));
        assert_eq!(lookup("nosuchentity"), None);
        assert_eq!(lookup(""), None);
    }
}
