//! The import allowlist, checked on the component's type before anything is linked: our
//! capabilities (in both worlds the host runs), plus the inert WASI pieces a stable-Rust std guest pulls in. Any other
//! import is refused by name, so the user learns exactly what the provider wanted.

use wasmtime::Engine;
use wasmtime::component::Component;

/// Interfaces a provider may import, as `namespace:package/interface`, with the
/// major.minor version line the host implements.
const ALLOWED: &[(&str, &str)] = &[
    ("credence:provider/http", "0.2"),
    ("credence:provider/prompt", "0.2"),
    ("credence:provider/flow", "0.2"),
    ("credence:provider/workload-identity", "0.2"),
    ("credence:provider/http", "0.1"),
    ("credence:provider/prompt", "0.1"),
    ("wasi:io/error", "0.2"),
    ("wasi:io/poll", "0.2"),
    ("wasi:io/streams", "0.2"),
    ("wasi:cli/environment", "0.2"),
    ("wasi:cli/exit", "0.2"),
    ("wasi:cli/stdin", "0.2"),
    ("wasi:cli/stdout", "0.2"),
    ("wasi:cli/stderr", "0.2"),
    ("wasi:cli/terminal-input", "0.2"),
    ("wasi:cli/terminal-output", "0.2"),
    ("wasi:cli/terminal-stdin", "0.2"),
    ("wasi:cli/terminal-stdout", "0.2"),
    ("wasi:cli/terminal-stderr", "0.2"),
    ("wasi:clocks/wall-clock", "0.2"),
    ("wasi:clocks/monotonic-clock", "0.2"),
    ("wasi:random/random", "0.2"),
    ("wasi:random/insecure", "0.2"),
    ("wasi:random/insecure-seed", "0.2"),
];

/// The provider interface of the current world; [`EXPORTS`] lists every one the host calls.
pub const EXPORT: (&str, &str) = ("credence:provider/credential-provider", "0.2");
pub const EXPORTS: &[(&str, &str)] = &[EXPORT, ("credence:provider/credential-provider", "0.1")];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error(
        "it imports {0}, which credence does not grant (providers get credence:provider/http, /prompt and /flow, and inert wasi:io, wasi:cli, wasi:clocks and wasi:random)"
    )]
    Forbidden(String),
    #[error("it does not export {}@{}.x (or @0.1.x); it is not a credence provider for this version", EXPORT.0, EXPORT.1)]
    MissingExport,
    #[error(
        "it uses {name}, but its signed manifest declares world {world}; build it against that world's WIT, or declare the world it was built for and sign it again"
    )]
    WorldMismatch { name: String, world: String },
}

/// `ns:pkg/iface@1.2.3` → (`ns:pkg/iface`, `1.2`).
fn split(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((iface, version)) => {
            let major_minor = match version.match_indices('.').nth(1) {
                Some((i, _)) => &version[..i],
                None => version,
            };
            (iface, Some(major_minor))
        }
        None => (name, None),
    }
}

pub fn is_allowed_import(name: &str) -> bool {
    let (iface, version) = split(name);
    ALLOWED.iter().any(|(a, v)| *a == iface && version == Some(*v))
}

/// Every credence interface a component imports or exports is of the world its signed
/// manifest declares: a 0.1 provider cannot reach 0.2's flows on a 0.1 ceiling.
pub fn check_world<'a>(world: &str, names: impl IntoIterator<Item = &'a String>) -> Result<(), ImportError> {
    let line = split(world).1.unwrap_or_default();
    for name in names {
        let (iface, version) = split(name);
        if iface.starts_with("credence:provider/") && version != Some(line) {
            return Err(ImportError::WorldMismatch {
                name: name.clone(),
                world: world.to_owned(),
            });
        }
    }
    Ok(())
}

/// Whether an export name is the provider interface this host calls.
pub fn is_provider_export(name: &str) -> bool {
    let (iface, version) = split(name);
    EXPORTS.iter().any(|(e, v)| *e == iface && version == Some(*v))
}

pub fn check_component_type(engine: &Engine, component: &Component) -> Result<(), ImportError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        if !is_allowed_import(name) {
            return Err(ImportError::Forbidden(name.to_owned()));
        }
    }
    let exported = ty.exports(engine).any(|(name, _)| is_provider_export(name));
    if !exported {
        return Err(ImportError::MissingExport);
    }
    Ok(())
}

/// The names of a component's imports and exports, for `credence providers` and review.
pub fn describe(engine: &Engine, component: &Component) -> (Vec<String>, Vec<String>) {
    let ty = component.component_type();
    (
        ty.imports(engine).map(|(n, _)| n.to_owned()).collect(),
        ty.exports(engine).map(|(n, _)| n.to_owned()).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_is_exact_on_interface_and_version_line() {
        assert!(is_allowed_import("wasi:cli/environment@0.2.6"));
        assert!(is_allowed_import("credence:provider/http@0.1.0"));
        assert!(is_allowed_import("credence:provider/flow@0.2.0"));
        assert!(is_provider_export("credence:provider/credential-provider@0.1.0"));
        assert!(is_provider_export("credence:provider/credential-provider@0.2.0"));
        assert!(!is_provider_export("credence:provider/credential-provider@0.3.0"));
        for bad in [
            "wasi:sockets/tcp@0.2.6",
            "wasi:filesystem/types@0.2.6",
            "wasi:http/outgoing-handler@0.2.6",
            "wasi:cli/environment@0.3.0",
            "wasi:cli/environment",
            "credence:provider/http-extra@0.1.0",
            "evil:provider/http@0.1.0",
            "credence:provider/http@1.1.0",
            // flow exists only from 0.2.
            "credence:provider/flow@0.1.0",
            "wasi:sockets/tcp-create-socket@0.2.6",
            "wasi:filesystem/preopens@0.2.6",
            "wasi:io/streams@0.3.0",
            // A bare root function: no package, no interface.
            "read-host-file",
            "",
        ] {
            assert!(!is_allowed_import(bad), "{bad}");
        }
    }
}
