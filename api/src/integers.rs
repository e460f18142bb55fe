//! JSON integers as JSON Schema reads them, for request bodies: `3.0` is the integer 3 (a
//! number with a zero fraction), and the largest integer a document can state exactly is
//! 2^53 − 1 ([`MAX_EXACT`]), so bodies take what their documents promise and nothing more.
//! Use with `#[serde(deserialize_with = "...")]` and the matching `#[schema(maximum = ...)]`.

use serde::de::{Error, Unexpected};
use serde::{Deserialize, Deserializer};

/// 2^53 − 1: the largest integer a JSON number (an IEEE double) holds exactly, and the
/// `maximum` the documents declare for counts and byte sizes in request bodies.
pub const MAX_EXACT: u64 = (1 << 53) - 1;

/// A whole number from 0 to `max`, written as an integer or with a zero fraction.
fn whole<'de, D: Deserializer<'de>>(deserializer: D, max: u64) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(deserializer)?;
    let value = match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => Some(u),
        (None, Some(f)) if f.fract() == 0.0 && (0.0..=MAX_EXACT as f64).contains(&f) => {
            Some(f as u64)
        }
        _ => None,
    };
    value.filter(|v| *v <= max).ok_or_else(|| {
        D::Error::invalid_value(
            Unexpected::Other(&n.to_string()),
            &format!("an integer from 0 to {max}").as_str(),
        )
    })
}

/// A `u32` (0 to 2^32 − 1).
pub fn u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    whole(deserializer, u64::from(u32::MAX)).map(|v| v as u32)
}

/// A `u64` from 0 to [`MAX_EXACT`].
pub fn u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    whole(deserializer, MAX_EXACT)
}

/// An optional `u64` from 0 to [`MAX_EXACT`] (`null` is `None`; with `#[serde(default)]` an
/// absent field is too).
pub fn opt_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Whole(#[serde(deserialize_with = "u64")] u64);
    Ok(Option::<Whole>::deserialize(deserializer)?.map(|w| w.0))
}

/// An optional `u32` (`null` is `None`; with `#[serde(default)]` an absent field is too).
pub fn opt_u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    struct Whole(#[serde(deserialize_with = "u32")] u32);
    Ok(Option::<Whole>::deserialize(deserializer)?.map(|w| w.0))
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Both {
        #[serde(deserialize_with = "super::u32")]
        small: u32,
        #[serde(deserialize_with = "super::u64")]
        big: u64,
    }

    fn parse(small: &str, big: &str) -> Option<(u32, u64)> {
        serde_json::from_str::<Both>(&format!(r#"{{"small":{small},"big":{big}}}"#))
            .ok()
            .map(|b| (b.small, b.big))
    }

    #[test]
    fn integers_with_zero_fractions_are_integers() {
        assert_eq!(parse("3", "4"), Some((3, 4)));
        assert_eq!(parse("228.0", "42071.0"), Some((228, 42071)));
        // Large ones too: read exactly (serde_json's `float_roundtrip`), not one step off.
        assert_eq!(
            parse("1.0", "4008337904590630.0"),
            Some((1, 4_008_337_904_590_630))
        );
        assert_eq!(
            parse("4294967295", "9007199254740991"),
            Some((u32::MAX, super::MAX_EXACT))
        );
    }

    #[test]
    fn fractions_negatives_strings_and_out_of_range_are_refused() {
        for (small, big) in [
            ("1.5", "1"),
            ("-1", "1"),
            ("\"3\"", "1"),
            ("4294967296", "1"),
            ("1", "9007199254740992"),
            ("1", "9223372036854775808"),
            ("1", "1e300"),
            ("null", "1"),
        ] {
            assert_eq!(parse(small, big), None, "{small} {big}");
        }
    }

    #[derive(Debug, serde::Deserialize)]
    struct Maybe {
        #[serde(default, deserialize_with = "super::opt_u64")]
        size: Option<u64>,
    }

    #[test]
    fn optional_integers_are_absent_null_or_whole() {
        let size = |body: &str| serde_json::from_str::<Maybe>(body).map(|m| m.size).ok();
        assert_eq!(size("{}"), Some(None));
        assert_eq!(size(r#"{"size":null}"#), Some(None));
        assert_eq!(size(r#"{"size":39598934.0}"#), Some(Some(39_598_934)));
        assert_eq!(size(r#"{"size":1.5}"#), None);
        assert_eq!(size(r#"{"size":9007199254740992}"#), None);
    }
}
