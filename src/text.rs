//! Small text helpers shared by every module that bounds what it keeps or logs.

/// The longest prefix of `s` of at most `max_bytes` bytes that ends on a character boundary,
/// so bounding an untrusted string never splits a UTF-8 sequence (or panics doing so).
pub fn truncate(s: &str, max_bytes: usize) -> &str {
    let mut end = s.len().min(max_bytes);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn cuts_on_char_boundaries() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("错误", 4), "错");
        assert_eq!(truncate("错误", 2), "");
        assert_eq!(truncate("", 0), "");
        for max in 0..10 {
            let t = truncate("a错b误", max);
            assert!(t.len() <= max && "a错b误".starts_with(t));
        }
    }
}
