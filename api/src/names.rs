//! Validation of namespaces and file names, and the deterministic mapping from a file name to
//! a Kubernetes resource name.

use std::fmt;

/// Longest accepted file name, in bytes. It matches the usual file-system limit, so that a
/// copy can be stored under its own name.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Longest accepted namespace, in bytes (a DNS label, as in Kubernetes).
pub const MAX_NAMESPACE_BYTES: usize = 63;

/// Why a namespace or file name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is {0} bytes long; the limit is {MAX_FILE_NAME_BYTES}")]
    FileNameTooLong(usize),
    #[error("name contains '/'")]
    Slash,
    #[error("name contains '..'")]
    DotDot,
    #[error("name contains a NUL byte")]
    Nul,
    #[error("name contains a control character")]
    Control,
    #[error("name '.' is reserved")]
    Dot,
    /// A character of Unicode general category Cf (format): bidirectional overrides and
    /// isolates, zero-width characters, the byte order mark, tag characters and the like. They
    /// are invisible or reorder what is shown, so `report\u{202E}fdp.exe` would list as
    /// `reportexe.pdf`.
    #[error("name contains U+{:04X} (a Unicode format character)", u32::from(*.0))]
    FormatCharacter(char),
    #[error("name must not start with '.deposito' (in any letter case)")]
    Reserved,
    #[error(
        "namespace '{0}' is not a DNS label (lowercase letters, digits and '-', at most 63 bytes)"
    )]
    Namespace(String),
}

/// The prefix of the servers' own files and folders. Names starting with it, in any ASCII letter
/// case (`.DEPOSITO-tmp` would be the same folder on a case-insensitive file system), are
/// refused.
pub const RESERVED_PREFIX: &str = ".deposito";

/// True for a character of Unicode general category Cf (format), as of Unicode 16.0.
pub fn is_format_character(c: char) -> bool {
    use unicode_general_category::{get_general_category, GeneralCategory};
    get_general_category(c) == GeneralCategory::Format
}

/// True when `name` starts with [`RESERVED_PREFIX`] in any ASCII letter case.
pub fn has_reserved_prefix(name: &str) -> bool {
    name.as_bytes()
        .get(..RESERVED_PREFIX.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes()))
}

/// Checks a user-visible file name. Refuses what could escape a folder or confuse a file
/// system or a reader: `/`, `..`, NUL, control characters, Unicode format characters
/// (general category Cf: bidirectional controls, zero-width characters, ...), `.`, the
/// reserved prefix `.deposito` in any letter case, and more than 255 bytes.
pub fn validate_file_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_FILE_NAME_BYTES {
        return Err(NameError::FileNameTooLong(name.len()));
    }
    if name.contains('\0') {
        return Err(NameError::Nul);
    }
    if name.contains('/') {
        return Err(NameError::Slash);
    }
    if name.contains("..") {
        return Err(NameError::DotDot);
    }
    if name == "." {
        return Err(NameError::Dot);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    if let Some(c) = name.chars().find(|&c| is_format_character(c)) {
        return Err(NameError::FormatCharacter(c));
    }
    if has_reserved_prefix(name) {
        return Err(NameError::Reserved);
    }
    Ok(())
}

/// Checks a namespace: a DNS label, like a Kubernetes namespace.
pub fn validate_namespace(namespace: &str) -> Result<(), NameError> {
    let ok = !namespace.is_empty()
        && namespace.len() <= MAX_NAMESPACE_BYTES
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !namespace.starts_with('-')
        && !namespace.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(NameError::Namespace(namespace.to_string()))
    }
}

/// A validated (namespace, file name) pair: the identity of a stored file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileKey {
    pub namespace: String,
    pub name: String,
}

impl FileKey {
    /// Validates both parts.
    pub fn new(namespace: &str, name: &str) -> Result<Self, NameError> {
        validate_namespace(namespace)?;
        validate_file_name(name)?;
        Ok(Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Longest Kubernetes object name (a DNS-1123 subdomain).
pub const MAX_RESOURCE_NAME_BYTES: usize = 253;

/// True when `name` is a valid DNS-1123 subdomain, as Kubernetes requires of `metadata.name`:
/// at most 253 bytes of lowercase letters, digits, `-` and `.`, in dot-separated labels that
/// start and end with a letter or digit.
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_RESOURCE_NAME_BYTES
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

/// The Kubernetes resource name (`metadata.name`) of a StoredFile for a file name.
///
/// The mapping is deterministic and documented:
/// - a file name that is already a valid DNS-1123 subdomain ([`is_dns_subdomain`]: lowercase
///   letters, digits, `-` and `.`, such as `report.pdf`) is its own resource name;
/// - any other name is lowercased, every run of characters outside `[a-z0-9.-]` becomes `-`,
///   the result is trimmed to 40 bytes, and `-` plus the first 10 hex digits of the sha256 of
///   the original name are appended (`f-<digits>` when nothing readable is left). Names that
///   differ only in case or in replaced characters therefore never collide, and the result is
///   a valid DNS subdomain of at most 51 bytes.
///
/// Two file names can only share a resource name if one of them is spelled exactly like the
/// other's hashed form; the StoredFile keeps its `spec.fileName`, so the gateway sees such a
/// clash and refuses it (`409 conflict`) instead of mixing the two files.
pub fn resource_name(file_name: &str) -> String {
    if is_dns_subdomain(file_name) {
        return file_name.to_string();
    }
    let mut slug = String::new();
    for c in file_name.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    // Keep it a subdomain: no empty labels, every label starting and ending alphanumeric.
    let labels: Vec<&str> = slug
        .split('.')
        .map(|l| l.trim_matches('-'))
        .filter(|l| !l.is_empty())
        .collect();
    let slug: String = labels.join(".").chars().take(40).collect();
    let slug = slug.trim_matches(|c| c == '-' || c == '.');
    let digest = &crate::sha256_hex(file_name.as_bytes())[..10];
    if slug.is_empty() {
        format!("f-{digest}")
    } else {
        format!("{slug}-{digest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_table() {
        let long = "a".repeat(256);
        let max = "a".repeat(255);
        let cases: &[(&str, Result<(), NameError>)] = &[
            ("report.pdf", Ok(())),
            ("with space.txt", Ok(())),
            ("ünïcødé", Ok(())),
            (".hidden", Ok(())),
            (&max, Ok(())),
            ("", Err(NameError::Empty)),
            (&long, Err(NameError::FileNameTooLong(256))),
            ("a/b", Err(NameError::Slash)),
            ("..", Err(NameError::DotDot)),
            ("../evil", Err(NameError::Slash)),
            ("a..b", Err(NameError::DotDot)),
            ("nul\0byte", Err(NameError::Nul)),
            ("tab\tname", Err(NameError::Control)),
            (".", Err(NameError::Dot)),
            (".deposito-tmp", Err(NameError::Reserved)),
            (".DEPOSITO-x", Err(NameError::Reserved)),
            (".Deposito", Err(NameError::Reserved)),
            (".dEpOsItO.txt", Err(NameError::Reserved)),
            ("x.deposito", Ok(())),
            (".deposit", Ok(())),
            // Not ASCII case folding: a different name, accepted.
            (".depo\u{17F}ito", Ok(())),
            (
                "report\u{202E}fdp.exe",
                Err(NameError::FormatCharacter('\u{202E}')),
            ),
            (
                "zero\u{200B}width",
                Err(NameError::FormatCharacter('\u{200B}')),
            ),
            ("\u{FEFF}bom", Err(NameError::FormatCharacter('\u{FEFF}'))),
            (
                "soft\u{AD}hyphen",
                Err(NameError::FormatCharacter('\u{AD}')),
            ),
            ("tag\u{E0041}", Err(NameError::FormatCharacter('\u{E0041}'))),
            (
                "kaithi\u{110BD}",
                Err(NameError::FormatCharacter('\u{110BD}')),
            ),
            // Joiners inside emoji sequences are format characters too.
            ("a\u{200D}b", Err(NameError::FormatCharacter('\u{200D}'))),
            // A zero-width character before the prefix hides it: refused for the character.
            (
                "\u{200B}.deposito",
                Err(NameError::FormatCharacter('\u{200B}')),
            ),
        ];
        for (name, want) in cases {
            assert_eq!(&validate_file_name(name), want, "name {name:?}");
        }
    }

    #[test]
    fn format_character_errors_name_the_code_point() {
        let e = validate_file_name("report\u{202E}fdp.exe").unwrap_err();
        assert_eq!(
            e.to_string(),
            "name contains U+202E (a Unicode format character)"
        );
        let e = validate_file_name("t\u{E0001}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "name contains U+E0001 (a Unicode format character)"
        );
    }

    #[test]
    fn every_listed_format_character_is_refused() {
        // The finding's list, and the ends of every Cf range of Unicode 16.0.
        for cp in [
            0xAD, 0x600, 0x605, 0x61C, 0x6DD, 0x70F, 0x890, 0x891, 0x8E2, 0x180E, 0x200B, 0x200C,
            0x200D, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2060, 0x2064, 0x2066,
            0x2067, 0x2068, 0x2069, 0x206F, 0xFEFF, 0xFFF9, 0xFFFB, 0x110BD, 0x110CD, 0x13430,
            0x1343F, 0x1BCA0, 0x1BCA3, 0x1D173, 0x1D17A, 0xE0001, 0xE0020, 0xE007F,
        ] {
            let c = char::from_u32(cp).unwrap();
            assert!(is_format_character(c), "U+{cp:04X}");
            assert_eq!(
                validate_file_name(&format!("a{c}b")),
                Err(NameError::FormatCharacter(c)),
                "U+{cp:04X}"
            );
        }
        // Neighbours that are not format characters.
        for c in [
            '\u{2010}',
            '\u{2065}',
            '\u{FFFC}',
            '\u{E0000}',
            '\u{E0080}',
            'é',
        ] {
            assert!(!is_format_character(c), "{c:?}");
        }
    }

    #[test]
    fn namespaces_table() {
        for ok in ["default", "team-a", "a1", &"a".repeat(63)] {
            assert_eq!(validate_namespace(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Team", "a_b", "-a", "a-", "a/b", &"a".repeat(64)] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resource_names_are_deterministic_valid_and_distinct() {
        // Subdomain-shaped names map to themselves.
        assert_eq!(resource_name("hello.txt"), "hello.txt");
        assert_eq!(resource_name("report-2026.pdf"), "report-2026.pdf");
        let a = resource_name("My Report (final).PDF");
        assert_eq!(a, resource_name("My Report (final).PDF"));
        assert!(a.starts_with("my-report-final.pdf-"), "{a}");
        assert_ne!(resource_name("A.txt"), resource_name("a.txt"));
        for name in [
            "A.txt",
            "___",
            "x".repeat(255).as_str(),
            "ünï",
            "a..b",
            ".hidden",
            "-dash-",
            "trailing.",
        ] {
            let r = resource_name(name);
            assert!(r.len() <= 51, "{r}");
            assert!(is_dns_subdomain(&r), "{name:?} -> {r:?}");
        }
    }

    #[test]
    fn dns_subdomain_table() {
        for ok in ["a", "a.b", "a-b.c-d", "0abc", &"a".repeat(253)] {
            assert!(is_dns_subdomain(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a..b",
            ".a",
            "a.",
            "-a",
            "a-",
            "a_b",
            "a b",
            &"a".repeat(254),
        ] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }
}
