//! Property tests of name validation and the file name → resource name mapping: no input
//! panics, no accepted name escapes its folder, and the mapping always yields a valid,
//! deterministic Kubernetes name that keeps distinct file names apart.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::path::{Component, Path};

use deposito_api::names::{
    is_dns_subdomain, resource_name, validate_file_name, validate_namespace, FileKey,
    MAX_FILE_NAME_BYTES, MAX_NAMESPACE_BYTES,
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
        "[a-zA-Z0-9 _.-]{1,8}",
        "\\PC{1,4}",
        any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(piece, 1..8).prop_map(|parts| parts.concat())
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
        }
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
