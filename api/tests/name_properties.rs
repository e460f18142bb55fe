//! Property tests of name validation and the file name → resource name mapping: no input
//! panics, no accepted name escapes its folder, and the mapping always yields a valid,
//! deterministic Kubernetes name that keeps distinct file names apart.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::path::{Component, Path};

use deposito_api::names::{
    is_dns_subdomain, is_format_character, resource_name, validate_file_name, validate_namespace,
    FileKey, NameError, MAX_FILE_NAME_BYTES, MAX_NAMESPACE_BYTES,
};
use proptest::prelude::*;

/// Strings that look like the dangerous ones: path pieces, dots, slashes, controls, unicode.
fn tricky_name() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("/".to_string()),
        Just("\\".to_string()),
        Just("\0".to_string()),
        Just("\n".to_string()),
        Just(".deposito".to_string()),
        Just("%2e%2e".to_string()),
        Just("\u{202E}".to_string()),
        Just("\u{200B}".to_string()),
        Just("\u{E0041}".to_string()),
        "[.][dD][eE][pP][oO][sS][iI][tT][oO]",
        "[a-zA-Z0-9 _.-]{1,8}",
        "\\PC{1,4}",
        any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(piece, 1..8).prop_map(|parts| parts.concat())
}

/// Every format character (general category Cf) of the validator's Unicode tables.
fn format_characters() -> Vec<char> {
    (0..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .filter(|&c| is_format_character(c))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// An accepted file name is exactly one normal path component: joined to a folder it
    /// names a direct child of that folder, so it can neither climb out nor reach deeper.
    #[test]
    fn accepted_file_names_stay_in_their_folder(name in prop_oneof![tricky_name(), any::<String>()]) {
        if validate_file_name(&name).is_ok() {
            prop_assert!(!name.is_empty() && name.len() <= MAX_FILE_NAME_BYTES);
            let folder = Path::new("/data/objects/default");
            let joined = folder.join(&name);
            prop_assert_eq!(joined.parent(), Some(folder), "{:?}", name);
            let components: Vec<Component> = Path::new(&name).components().collect();
            prop_assert_eq!(components.len(), 1, "{:?}", name);
            prop_assert!(matches!(components[0], Component::Normal(_)), "{:?}", name);
            prop_assert!(!name.chars().any(char::is_control));
            prop_assert!(!name.starts_with(".deposito"));
            prop_assert!(!name.to_ascii_lowercase().starts_with(".deposito"));
            prop_assert!(!name.chars().any(is_format_character));
        }
    }

    /// A name holding a format character (general category Cf) anywhere is refused, and the
    /// error names the first one.
    #[test]
    fn names_with_a_format_character_are_refused(
        before in "[a-zA-Z0-9 _.-]{0,20}",
        cf in prop::sample::select(format_characters()),
        after in prop_oneof![tricky_name(), "[a-zA-Z0-9 _-]{0,20}"],
    ) {
        let name = format!("{before}{cf}{after}");
        prop_assert!(validate_file_name(&name).is_err(), "{:?}", name);
        // Refused for the format character itself when nothing checked earlier breaks.
        let otherwise_plain = name.len() <= MAX_FILE_NAME_BYTES
            && !name.contains(['/', '\0'])
            && !name.contains("..")
            && !name.chars().any(char::is_control);
        if otherwise_plain {
            prop_assert_eq!(validate_file_name(&name), Err(NameError::FormatCharacter(cf)), "{:?}", name);
        }
    }

    /// Every ASCII letter-case variant of the reserved prefix is refused, whatever follows.
    #[test]
    fn reserved_prefix_is_refused_in_any_case(
        prefix in "[.][dD][eE][pP][oO][sS][iI][tT][oO]",
        rest in "[a-zA-Z0-9 _-]{0,20}",
    ) {
        let name = format!("{prefix}{rest}");
        prop_assert_eq!(validate_file_name(&name), Err(NameError::Reserved), "{:?}", name);
    }

    /// A namespace is accepted exactly when it is a DNS label.
    #[test]
    fn namespaces_are_accepted_exactly_when_dns_labels(ns in prop_oneof!["[a-z0-9-]{0,70}", any::<String>()]) {
        let label = !ns.is_empty()
            && ns.len() <= MAX_NAMESPACE_BYTES
            && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        prop_assert_eq!(validate_namespace(&ns).is_ok(), label, "{:?}", ns);
    }

    /// A key is valid exactly when both parts are, and its display round-trips.
    #[test]
    fn file_keys_round_trip_through_display(ns in "[a-z0-9-]{1,12}", name in tricky_name()) {
        match FileKey::new(&ns, &name) {
            Ok(key) => {
                let shown = key.to_string();
                let (ns2, name2) = shown.split_once('/').expect("namespace/name");
                prop_assert_eq!(FileKey::new(ns2, name2).unwrap(), key);
            }
            Err(_) => prop_assert!(validate_namespace(&ns).is_err() || validate_file_name(&name).is_err()),
        }
    }

    /// The resource name is always a valid DNS subdomain, deterministic, the file name itself
    /// when that already is one, and at most 51 bytes otherwise.
    #[test]
    fn resource_names_are_valid_and_deterministic(name in prop_oneof![tricky_name(), any::<String>(), "[a-z0-9.-]{1,60}"]) {
        let r = resource_name(&name);
        prop_assert!(is_dns_subdomain(&r), "{:?} -> {:?}", name, r);
        prop_assert_eq!(&r, &resource_name(&name));
        if is_dns_subdomain(&name) {
            prop_assert_eq!(&r, &name);
        } else {
            prop_assert!(r.len() <= 51, "{:?} -> {:?}", name, r);
        }
    }

    /// Two different file names get two different resource names, unless one is spelled
    /// exactly like the other's mapped form (the documented clash the gateway refuses).
    #[test]
    fn different_file_names_map_apart(a in tricky_name(), b in tricky_name()) {
        prop_assume!(a != b);
        let (ra, rb) = (resource_name(&a), resource_name(&b));
        if ra == rb {
            prop_assert!(a == rb || b == ra, "{:?} and {:?} both map to {:?}", a, b, ra);
        }
    }

    /// Names differing only in case never collide.
    #[test]
    fn case_variants_map_apart(name in "[a-zA-Z]{1,20}\\.[a-z]{1,4}") {
        let upper = name.to_uppercase();
        prop_assume!(upper != name);
        prop_assert_ne!(resource_name(&name), resource_name(&upper));
    }
}
