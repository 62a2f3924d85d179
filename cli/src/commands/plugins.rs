//! `trawl plugins`: the kinds of every role and the plugin libraries loaded.

use trawl_core::registry::{Registry, Role};

/// `trawl plugins`: every kind by role, where it came from, and the libraries loaded.
pub fn plugins_listing(registry: &Registry) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for role in Role::ALL {
        let _ = writeln!(out, "{}:", role.plural());
        for e in registry.kinds(role) {
            let from = match &e.origin {
                trawl_core::registry::Origin::BuiltIn => String::new(),
                trawl_core::registry::Origin::Plugin(p) => format!("  [plugin {}]", p.display()),
            };
            let _ = writeln!(
                out,
                "  {:<16} {}  ({}){from}",
                e.kind, e.description, e.version
            );
        }
    }
    let libraries = registry.libraries();
    if libraries.is_empty() {
        let _ = writeln!(
            out,
            "plugin libraries: none loaded (use --plugin PATH, {} or a config's `plugins` list)",
            trawl_plugin_loader::PLUGIN_PATH_VAR
        );
    } else {
        let _ = writeln!(out, "plugin libraries:");
        for l in libraries {
            let _ = writeln!(
                out,
                "  {} {}  {}\n    ABI {}, built against trawl-core {}; offers {}",
                l.name,
                l.version,
                l.path.display(),
                l.abi_version,
                l.core_version,
                l.kinds.join(", ")
            );
        }
    }
    out
}
