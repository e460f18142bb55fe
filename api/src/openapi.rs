//! The parts of the OpenAPI contract both servers share, so that the gateway's and the
//! replica's documents say the same thing the same way:
//!
//! - the name rules of [`crate::names`] as schema constraints on every path parameter
//!   (`{namespace}`/`{ns}`, `{name}`, `{sha256}`), declared on every operation whose path has
//!   them;
//! - the error answers every route can give: `400` when a path parameter breaks its rule, `401`
//!   without the route's token.
//!
//! The patterns are tested against the Rust validators in `tests/openapi_patterns.rs`; they
//! use only syntax that ECMA-262 and Python's `re` read alike (`(?![\s\S])` for the end, since
//! `$` also matches before a final newline in Python; `\uXXXX` escapes, and no `\p{..}`, which
//! Python lacks). Characters above U+FFFF appear literally, one alternative each, outside any
//! character class: a class of them would hold halves of surrogate pairs in an ECMA-262
//! pattern without the `u` flag, while a literal sequence matches alike with or without it.

use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, Required, Response, ResponseBuilder};

use crate::names::{MAX_FILE_NAME_BYTES, MAX_NAMESPACE_BYTES};

/// A namespace: a DNS label (lowercase letters, digits and `-`, not at either end).
pub const NAMESPACE_PATTERN: &str = r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?![\s\S])";

/// A file name: no `/`, no control character (Cc), no format character (Cf, Unicode 16.0),
/// no `..`, not `.`, not starting with `.deposito` in any ASCII letter case. (Its length is
/// `maxLength`; see [`file_name_schema`].) The format characters of the Basic Multilingual
/// Plane are ranges of the final class; those above it (U+110BD, U+110CD, U+13430–1343F,
/// U+1BCA0–1BCA3, U+1D173–1D17A, U+E0001, U+E0020–E007F) are the literal alternatives of a
/// lookahead (see the module doc). `tests/openapi_patterns.rs` checks every code point
/// against [`crate::names::is_format_character`].
pub const FILE_NAME_PATTERN: &str = concat!(
    r"^(?![.][dD][eE][pP][oO][sS][iI][tT][oO])(?!\.(?![\s\S]))(?![\s\S]*\.\.)",
    r"(?![\s\S]*(?:",
    "\u{110BD}|\u{110CD}|\u{13430}|\u{13431}|\u{13432}|\u{13433}|\u{13434}|\u{13435}|\u{13436}|",
    "\u{13437}|\u{13438}|\u{13439}|\u{1343A}|\u{1343B}|\u{1343C}|\u{1343D}|\u{1343E}|\u{1343F}|",
    "\u{1BCA0}|\u{1BCA1}|\u{1BCA2}|\u{1BCA3}|\u{1D173}|\u{1D174}|\u{1D175}|\u{1D176}|\u{1D177}|",
    "\u{1D178}|\u{1D179}|\u{1D17A}|\u{E0001}|\u{E0020}|\u{E0021}|\u{E0022}|\u{E0023}|\u{E0024}|",
    "\u{E0025}|\u{E0026}|\u{E0027}|\u{E0028}|\u{E0029}|\u{E002A}|\u{E002B}|\u{E002C}|\u{E002D}|",
    "\u{E002E}|\u{E002F}|\u{E0030}|\u{E0031}|\u{E0032}|\u{E0033}|\u{E0034}|\u{E0035}|\u{E0036}|",
    "\u{E0037}|\u{E0038}|\u{E0039}|\u{E003A}|\u{E003B}|\u{E003C}|\u{E003D}|\u{E003E}|\u{E003F}|",
    "\u{E0040}|\u{E0041}|\u{E0042}|\u{E0043}|\u{E0044}|\u{E0045}|\u{E0046}|\u{E0047}|\u{E0048}|",
    "\u{E0049}|\u{E004A}|\u{E004B}|\u{E004C}|\u{E004D}|\u{E004E}|\u{E004F}|\u{E0050}|\u{E0051}|",
    "\u{E0052}|\u{E0053}|\u{E0054}|\u{E0055}|\u{E0056}|\u{E0057}|\u{E0058}|\u{E0059}|\u{E005A}|",
    "\u{E005B}|\u{E005C}|\u{E005D}|\u{E005E}|\u{E005F}|\u{E0060}|\u{E0061}|\u{E0062}|\u{E0063}|",
    "\u{E0064}|\u{E0065}|\u{E0066}|\u{E0067}|\u{E0068}|\u{E0069}|\u{E006A}|\u{E006B}|\u{E006C}|",
    "\u{E006D}|\u{E006E}|\u{E006F}|\u{E0070}|\u{E0071}|\u{E0072}|\u{E0073}|\u{E0074}|\u{E0075}|",
    "\u{E0076}|\u{E0077}|\u{E0078}|\u{E0079}|\u{E007A}|\u{E007B}|\u{E007C}|\u{E007D}|\u{E007E}|",
    "\u{E007F}",
    r"))",
    r"[^/\x00-\x1F\x7F-\x9F\u00AD\u0600-\u0605\u061C\u06DD\u070F\u0890\u0891\u08E2\u180E",
    r"\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u206F\uFEFF\uFFF9-\uFFFB]+(?![\s\S])",
);

/// A sha256 digest as the servers name copies: 64 lowercase hex characters.
pub const SHA256_PATTERN: &str = r"^[0-9a-f]{64}(?![\s\S])";

/// An expected sha256 given by a client: 64 hex characters, either case.
pub const SHA256_ANY_CASE_PATTERN: &str = r"^[0-9a-fA-F]{64}(?![\s\S])";

/// The URLs the documents promise to take where a server fetches from a URL (a `url` source,
/// a peer to pull from): `http` or `https`, a host name of lowercase labels that start with a
/// letter, an optional port and path. The servers take more (IP literals, query strings), but
/// every URL this matches parses, so a request refused for its URL is a 403 (a host the
/// server may not reach) or a 502 (one it could not reach), never a 400.
pub const HTTP_URL_PATTERN: &str = r"^https?://(?!xn--)[a-z][-a-z0-9]{0,62}(?:\.(?!xn--)[a-z][-a-z0-9]{0,62})*(?::[1-9][0-9]{0,3})?(?:/[-A-Za-z0-9._~/]*)?(?![\s\S])";

/// Most copies a file may ask for. HDFS's default `dfs.replication.max` is 512 too.
pub const MAX_REPLICAS: u32 = 512;

fn string_schema(pattern: &str, max_length: usize, description: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(Some(1))
        .max_length(Some(max_length))
        .description(Some(description))
        .into()
}

/// The schema of a namespace.
pub fn namespace_schema() -> Schema {
    string_schema(
        NAMESPACE_PATTERN,
        MAX_NAMESPACE_BYTES,
        "namespace: a DNS label, at most 63 characters",
    )
}

/// The schema of a file name. `maxLength` counts characters; the rule counts UTF-8 bytes (at
/// most 255, a file system's limit for one path component), which JSON Schema cannot say: a
/// name of at most 255 characters but more than 255 bytes is refused with `400 invalid_name`.
pub fn file_name_schema() -> Schema {
    string_schema(
        FILE_NAME_PATTERN,
        MAX_FILE_NAME_BYTES,
        "file name: at most 255 bytes of UTF-8, no '/', no control character, no Unicode \
         format character (category Cf: bidirectional controls, zero-width characters, ...), \
         no '..', not '.', not starting with '.deposito' in any letter case",
    )
}

/// The schema of a copy's sha256.
pub fn sha256_schema() -> Schema {
    string_schema(SHA256_PATTERN, 64, "sha256 of the content, lowercase hex")
}

/// The schema of a path variable, by its name in the path template.
fn path_variable_schema(variable: &str) -> Schema {
    match variable {
        "namespace" | "ns" => namespace_schema(),
        "name" => file_name_schema(),
        "sha256" => sha256_schema(),
        _ => ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .into(),
    }
}

/// The variables of a path template: `/v1/files/{namespace}/{name}` → namespace, name.
pub fn path_variables(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// Calls `f` with every operation of the document and its path.
pub fn for_each_operation(openapi: &mut OpenApi, mut f: impl FnMut(&str, &mut Operation)) {
    for (path, item) in &mut openapi.paths.paths {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.head,
            &mut item.patch,
            &mut item.options,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            f(path, operation);
        }
    }
}

/// A response whose body is the shared `ErrorBody`.
pub fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// Adds `status` with an `ErrorBody` unless the operation already declares it.
pub fn add_error(operation: &mut Operation, status: &str, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| error_response(description).into());
}

/// What both servers' documents get: the `bearer` security scheme, every path parameter with
/// its rule ([`declare_path_parameters`]) and `401` where a token is required
/// ([`declare_unauthorized`]).
pub fn complete(openapi: &mut OpenApi) {
    openapi
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    declare_path_parameters(openapi);
    declare_unauthorized(openapi);
}

/// Declares every variable of every path as a required path parameter with its rule's schema
/// (replacing a looser declaration), and `400` on the operations whose variables have rules.
pub fn declare_path_parameters(openapi: &mut OpenApi) {
    for_each_operation(openapi, |path, operation| {
        let variables = path_variables(path);
        let parameters = operation.parameters.get_or_insert_with(Vec::new);
        for variable in &variables {
            let description = parameters
                .iter()
                .find(|p| p.name == *variable && p.parameter_in == ParameterIn::Path)
                .and_then(|p| p.description.clone());
            parameters.retain(|p| !(p.name == *variable && p.parameter_in == ParameterIn::Path));
            let schema = path_variable_schema(variable);
            let description = description.or_else(|| match &schema {
                Schema::Object(object) => object.description.clone(),
                _ => None,
            });
            parameters.push(
                ParameterBuilder::new()
                    .name(*variable)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(description)
                    .schema(Some(schema))
                    .build(),
            );
        }
        let ruled = variables
            .iter()
            .any(|v| matches!(*v, "namespace" | "ns" | "name" | "sha256"));
        if ruled {
            add_error(
                operation,
                "400",
                "a path parameter breaks its rule (`invalid_name`, `invalid_digest`), or the \
                 request is malformed (`bad_request`)",
            );
        }
    });
}

/// Declares `401` on every operation that requires a token (its own `security`, or the
/// document's when it has none of its own).
pub fn declare_unauthorized(openapi: &mut OpenApi) {
    let document_secured = openapi.security.as_ref().is_some_and(|s| !s.is_empty());
    for_each_operation(openapi, |_, operation| {
        let secured = match &operation.security {
            Some(requirements) => !requirements.is_empty(),
            None => document_secured,
        };
        if secured {
            add_error(
                operation,
                "401",
                "no bearer token, or not the one this server takes (`unauthorized`)",
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_variables_are_read_from_the_template() {
        assert_eq!(
            path_variables("/v1/files/{namespace}/{name}/status"),
            ["namespace", "name"]
        );
        assert!(path_variables("/v1/replicas").is_empty());
    }
}
