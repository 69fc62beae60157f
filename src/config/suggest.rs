//! "Did you mean …?": the closest known name to a misspelt one (net-conf keys, `WEFT_*` variables).

/// Optimal-string-alignment distance (insertions, deletions, substitutions, adjacent
/// transpositions), ASCII case-insensitive.
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<u8> = a.bytes().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<u8> = b.bytes().map(|c| c.to_ascii_lowercase()).collect();
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
        }
        prev2 = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

/// The candidate closest to `word` within `max` edits (the first on ties), if any.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    max: usize,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("VNI", "VNII"), 1);
        assert_eq!(distance("SubnetLen", "SubnetLength"), 3);
        assert_eq!(distance("subnetlen", "SubnetLen"), 0);
        assert_eq!(distance("NETWROK", "NETWORK"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(closest("SEED", ["SEEDS", "API"], 1), Some("SEEDS"));
        assert_eq!(closest("BIN", ["SEEDS", "API"], 1), None);
    }
}
