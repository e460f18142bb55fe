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
//! `$` also matches before a final newline in Python).

use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, Required, Response, ResponseBuilder};

use crate::names::{MAX_FILE_NAME_BYTES, MAX_NAMESPACE_BYTES};

/// A namespace: a DNS label (lowercase letters, digits and `-`, not at either end).
pub const NAMESPACE_PATTERN: &str = r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?![\s\S])";

/// A file name: no `/`, no control character, no `..`, not `.`, not starting with
/// `.deposito`. (Its length is `maxLength`; see [`file_name_schema`].)
pub const FILE_NAME_PATTERN: &str =
    r"^(?!\.deposito)(?!\.(?![\s\S]))(?![\s\S]*\.\.)[^/\x00-\x1F\x7F-\x9F]+(?![\s\S])";

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
        "file name: at most 255 bytes of UTF-8, no '/', no control character, no '..', \
         not '.', not starting with '.deposito'",
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
