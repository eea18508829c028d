//! Numbers the reliability suites read from the environment: seeds a run
//! can be replayed with, and counts a parent hands its child roles.

/// The seed in `var` (decimal or `0x` hex), else `default`.
pub fn seed(var: &str, default: u64) -> u64 {
    match std::env::var(var) {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{var}={s}: {e}"))
        }
        Err(_) => default,
    }
}

/// The number in `name`, which must be set.
pub fn env_u64(name: &str) -> u64 {
    let v = std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    v.parse().unwrap_or_else(|e| panic!("{name}={v}: {e}"))
}

/// The number in `name`, or `default` when it is not set.
pub fn env_u64_or(name: &str, default: u64) -> u64 {
    match std::env::var_os(name) {
        Some(_) => env_u64(name),
        None => default,
    }
}
