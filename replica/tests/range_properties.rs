//! Property tests of `Range` header parsing: no header panics, what is selected always lies
//! inside the object, and every well-formed single range selects exactly its bytes.

use deposito_replica::range::{parse_range, RangeSpec};
use proptest::prelude::*;

/// Headers near the grammar: valid ranges, broken ones, several ranges, junk.
fn header() -> impl Strategy<Value = String> {
    let num = prop_oneof![
        (0u64..2_000).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_string()),
        Just(String::new()),
        Just("-1".to_string()),
        Just(" 5 ".to_string()),
        Just("+5".to_string()),
        "[0-9a-f]{1,4}",
    ];
    prop_oneof![
        (num.clone(), num.clone()).prop_map(|(a, b)| format!("bytes={a}-{b}")),
        (num.clone(), num.clone(), num.clone()).prop_map(|(a, b, c)| format!("bytes={a}-{b},{c}-")),
        (num.clone(), num).prop_map(|(a, b)| format!("items={a}-{b}")),
        any::<String>(),
        "bytes=[-0-9, ]{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8192))]

    #[test]
    fn any_header_selects_inside_the_object(h in header(), size in prop_oneof![Just(0u64), 0u64..3_000, any::<u64>()]) {
        match parse_range(Some(&h), size) {
            RangeSpec::Partial { start, end } => {
                prop_assert!(start <= end && end < size, "{:?} size {} -> {}..={}", h, size, start, end);
                let len = RangeSpec::Partial { start, end }.selected_len().unwrap();
                prop_assert!(len >= 1 && len <= size);
            }
            RangeSpec::Full | RangeSpec::Unsatisfiable => {}
        }
    }

    #[test]
    fn a_closed_range_inside_the_object_selects_exactly_its_bytes(size in 1u64..1_000_000, a in any::<u64>(), b in any::<u64>()) {
        let (start, end) = (a % size, b % size);
        let (start, end) = (start.min(end), start.max(end));
        prop_assert_eq!(
            parse_range(Some(&format!("bytes={start}-{end}")), size),
            RangeSpec::Partial { start, end }
        );
    }

    #[test]
    fn open_and_suffix_ranges_select_the_tail(size in 1u64..1_000_000, n in 1u64..2_000_000) {
        let start = n % size;
        prop_assert_eq!(
            parse_range(Some(&format!("bytes={start}-")), size),
            RangeSpec::Partial { start, end: size - 1 }
        );
        prop_assert_eq!(
            parse_range(Some(&format!("bytes=-{n}")), size),
            RangeSpec::Partial { start: size - n.min(size), end: size - 1 }
        );
        // A range past the end selects nothing (416); one that ends past it is clamped.
        prop_assert_eq!(parse_range(Some(&format!("bytes={}-", size + n)), size), RangeSpec::Unsatisfiable);
        prop_assert_eq!(
            parse_range(Some(&format!("bytes={start}-{}", size + n)), size),
            RangeSpec::Partial { start, end: size - 1 }
        );
    }
}
