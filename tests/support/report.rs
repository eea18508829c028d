//! Reading what child roles report: lines of `key=value` pairs after a
//! prefix (`result: ...`), the numbers in them, and short error names for
//! them.

use std::collections::BTreeMap;

/// The `key=value` pairs of a line (words without `=` are skipped).
pub fn pairs(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The number under `key`, which must be there.
pub fn num(map: &BTreeMap<String, String>, key: &str) -> u64 {
    map.get(key)
        .unwrap_or_else(|| panic!("no {key} in {map:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// The rest of the first line starting with `prefix`, trimmed.
pub fn line_with<'a>(lines: &'a [String], prefix: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
}

/// The pairs of the `result:` line of a child's output, which must have
/// one.
pub fn result_of(out: &[String]) -> BTreeMap<String, String> {
    let line = line_with(out, "result:")
        .unwrap_or_else(|| panic!("no result line from the child; it said {out:?}"));
    pairs(line)
}

/// The leading identifier of a `Debug` rendering: an enum value's variant
/// name (`TooShort` of `TooShort { len: 0 }`).
pub fn variant_name(debug: &str) -> String {
    debug
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}
