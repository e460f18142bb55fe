//! The OpenAPI documents carry the name rules as regular expressions
//! ([`deposito_api::openapi`]); these tests hold the expressions to the Rust validators, so
//! the documents and the servers accept exactly the same names (within the one documented
//! difference: `maxLength` counts characters where the rule counts UTF-8 bytes).

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use deposito_api::is_sha256_hex;
use deposito_api::names::{
    is_format_character, validate_file_name, validate_namespace, MAX_FILE_NAME_BYTES,
};
use deposito_api::openapi::{
    FILE_NAME_PATTERN, NAMESPACE_PATTERN, SHA256_ANY_CASE_PATTERN, SHA256_PATTERN,
};
use fancy_regex::Regex;
use proptest::prelude::*;

fn matches(pattern: &str, s: &str) -> bool {
    Regex::new(pattern).unwrap().is_match(s).unwrap()
}

/// What the document accepts as a file name: the pattern and at most 255 characters.
fn schema_accepts_file_name(s: &str) -> bool {
    matches(FILE_NAME_PATTERN, s) && s.chars().count() <= MAX_FILE_NAME_BYTES
}

/// Strings near the rules' edges: dots, slashes, controls, the reserved prefix, unicode.
fn tricky() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("/".to_string()),
        Just("\n".to_string()),
        Just("\0".to_string()),
        Just("\u{85}".to_string()),
        Just("\u{7f}".to_string()),
        Just(".deposito".to_string()),
        "[.][dD][eE][pP][oO][sS][iI][tT][oO]",
        Just("-".to_string()),
        format_character().prop_map(|c| c.to_string()),
        "[a-z0-9-]{1,8}",
        "[a-zA-Z0-9 _.-]{1,8}",
        any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|parts| parts.concat())
}

/// A Unicode format character (general category Cf), from the Basic Multilingual Plane or
/// above it.
fn format_character() -> impl Strategy<Value = char> {
    prop_oneof![
        Just('\u{AD}'),
        Just('\u{200B}'),
        Just('\u{202E}'),
        Just('\u{2066}'),
        Just('\u{FEFF}'),
        Just('\u{E0001}'),
        Just('\u{110BD}'),
        prop::sample::select(
            (0..=0x10FFFFu32)
                .filter_map(char::from_u32)
                .filter(|&c| is_format_character(c))
                .collect::<Vec<char>>()
        ),
    ]
}

/// Every code point, in a name of its own: the pattern accepts it exactly when the validator
/// does, so the pattern's list of format characters is the category Cf of the validator's
/// Unicode tables (16.0), range for range.
#[test]
fn file_name_pattern_refuses_exactly_the_format_characters() {
    let re = Regex::new(FILE_NAME_PATTERN).unwrap();
    for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
        let name = format!("a{c}b");
        let pattern = re.is_match(&name).unwrap();
        assert_eq!(
            pattern,
            validate_file_name(&name).is_ok(),
            "U+{:04X}",
            u32::from(c)
        );
        if is_format_character(c) {
            assert!(!pattern, "U+{:04X}", u32::from(c));
        }
    }
}

#[test]
fn patterns_agree_with_the_validators_on_a_table() {
    let names = [
        ("report.pdf", true),
        ("Report 2026.bin", true),
        ("résumé.pdf", true),
        (".hidden", true),
        ("a.b.c", true),
        ("", false),
        (".", false),
        ("..", false),
        ("a..b", false),
        ("a/b", false),
        ("a\nb", false),
        ("tail\n", false),
        ("nul\0", false),
        ("c1\u{85}", false),
        (".deposito", false),
        (".deposito-tmp", false),
        (".DEPOSITO-x", false),
        (".Deposito", false),
        (".dEpOsItO", false),
        ("x.deposito", true),
        (".deposit", true),
        ("report\u{202E}fdp.exe", false),
        ("zero\u{200B}width", false),
        ("\u{FEFF}bom", false),
        ("tag\u{E0041}", false),
        ("\u{E0001}", false),
        ("\u{1D173}", false),
        ("\u{E0100}", true),
        ("\u{1F600}", true),
    ];
    for (name, ok) in names {
        assert_eq!(
            validate_file_name(name).is_ok(),
            ok,
            "validator on {name:?}"
        );
        assert_eq!(schema_accepts_file_name(name), ok, "pattern on {name:?}");
    }
    let namespaces = [
        ("default", true),
        ("a", true),
        ("a-1", true),
        ("-a", false),
        ("a-", false),
        ("A", false),
        ("a_b", false),
        ("", false),
        ("a\n", false),
    ];
    for (ns, ok) in namespaces {
        assert_eq!(validate_namespace(ns).is_ok(), ok, "validator on {ns:?}");
        assert_eq!(matches(NAMESPACE_PATTERN, ns), ok, "pattern on {ns:?}");
    }
    assert!(matches(SHA256_PATTERN, &"a".repeat(64)));
    assert!(!matches(SHA256_PATTERN, &"A".repeat(64)));
    assert!(matches(SHA256_ANY_CASE_PATTERN, &"A".repeat(64)));
    assert!(!matches(SHA256_PATTERN, &"a".repeat(65)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Pattern plus maxLength accept a file name exactly when the validator does, for every
    /// name of at most 255 bytes (beyond that the schema's character count is looser).
    #[test]
    fn file_name_pattern_is_the_validator(name in prop_oneof![tricky(), any::<String>()]) {
        if name.len() <= MAX_FILE_NAME_BYTES {
            prop_assert_eq!(schema_accepts_file_name(&name), validate_file_name(&name).is_ok());
        } else if schema_accepts_file_name(&name) {
            // The one difference: too many bytes, refused by the server with 400.
            prop_assert!(validate_file_name(&name).is_err());
        }
    }

    #[test]
    fn namespace_pattern_is_the_validator(ns in prop_oneof![tricky(), "[a-z0-9-]{0,70}"]) {
        let schema = matches(NAMESPACE_PATTERN, &ns) && ns.chars().count() <= 63;
        prop_assert_eq!(schema, validate_namespace(&ns).is_ok());
    }

    #[test]
    fn sha256_pattern_is_the_validator(s in prop_oneof!["[0-9a-fA-F]{63,65}", any::<String>()]) {
        prop_assert_eq!(matches(SHA256_PATTERN, &s), is_sha256_hex(&s));
    }
}
