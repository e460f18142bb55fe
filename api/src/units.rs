//! Byte counts for people, in binary units: the one formatting shared by the client's tables,
//! the `StoredFile` status (`kubectl get sf`) and the benchmark's labels.

/// Bytes in binary units, one decimal above 1 KiB: `0 B`, `1023 B`, `1.5 KiB`, `5.0 MiB`,
/// `3.0 GiB`, up to `16.0 EiB` for `u64::MAX`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(7), "7 B");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_bytes(4096), "4.0 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(human_bytes(1 << 40), "1.0 TiB");
        assert_eq!(human_bytes(1 << 50), "1.0 PiB");
        assert_eq!(human_bytes(1 << 60), "1.0 EiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn just_below_a_unit_rounds_within_it() {
        // One decimal of a value just under 1024 of a unit: printed as 1024.0 of that unit.
        assert_eq!(human_bytes((1 << 20) - 1), "1024.0 KiB");
        assert_eq!(human_bytes((1 << 20) + (1 << 19)), "1.5 MiB");
    }
}
