//! Loads trawl plugins from shared libraries and registers their kinds beside the built-in ones.
//!
//! A library is checked in stages before any of its trawl code runs (see `trawl-plugin-abi`):
//! the bare ABI version, then the compatibility record, then the remaining entry points, and
//! only then is it asked for its kinds. An incompatible or foreign library is refused with a
//! message that names what was expected and what was found. Libraries are never unloaded: every
//! component built from one holds function pointers into it for as long as the process lives.
//!
//! This is the only crate of the workspace with `unsafe` blocks; each says why it holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use trawl_core::registry::{Entry, Origin, PluginLibrary, Registry, RegistryError};
use trawl_plugin_abi::wire::{Reply, Request};
use trawl_plugin_abi::{
    role_bit, role_names, role_plurals, roles_supported, CompatRecord, RawStr, ABI_VERSION,
    COMPAT_RECORD_SIZE, OLDEST_ABI_VERSION, SYMBOL_ABI_VERSION, SYMBOL_ALLOC, SYMBOL_CALL,
    SYMBOL_COMPAT, SYMBOL_FREE, WIRE_FORMAT,
};

mod host;
mod plugin;

pub use plugin::Plugin;
use plugin::{AllocFn, CallFn, FreeFn};

pub use host::{
    PluginEnvironment, PluginEvaluator, PluginExporter, PluginModel, PluginSandboxBackend,
    PluginScaffold,
};

/// The environment variable naming folders of plugins to load, separated like `PATH`.
pub const PLUGIN_PATH_VAR: &str = "TRAWL_PLUGIN_PATH";

/// Why a library could not be loaded. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot load it as a shared library: {message}\n  hint: a plugin is the `.so` (`.dylib` on macOS) that `cargo build` writes for a crate with crate-type = [\"cdylib\"], for example target/debug/libmy_plugin.so")]
    Open { path: PathBuf, message: String },
    #[error("{path}: not a trawl plugin: it exports no `{SYMBOL_ABI_VERSION}` symbol\n  hint: a plugin crate depends on trawl-plugin-abi and calls `trawl_plugin_abi::declare_plugin!()`; see docs/plugins.md")]
    NotAPlugin { path: PathBuf },
    #[error("{path}: built for trawl plugin ABI {found}, but this trawl ({trawl}) loads ABI {}\n  hint: rebuild the plugin against the trawl-plugin-abi of the trawl you run it with", abi_range())]
    AbiMismatch {
        path: PathBuf,
        found: u32,
        trawl: String,
    },
    #[error("{path}: claims plugin ABI {abi} but lacks the symbol `{symbol}`: {message}\n  hint: the library is damaged or was not built with trawl-plugin-abi; rebuild it")]
    MissingSymbol {
        path: PathBuf,
        abi: u32,
        symbol: &'static str,
        message: String,
    },
    #[error("{path}: incompatible plugin: {}\n  hint: rebuild the plugin against the trawl-plugin-abi and trawl-core of this trawl ({trawl})", .differences.join("; "))]
    Incompatible {
        path: PathBuf,
        differences: Vec<String>,
        trawl: String,
    },
    #[error("{path}: plugin `{plugin}` failed while listing its kinds: {message}")]
    Kinds {
        path: PathBuf,
        plugin: String,
        message: String,
    },
    #[error("{0}")]
    Registry(#[from] RegistryError),
}

/// The ABI versions this trawl loads, for messages: "1 to 2".
pub fn abi_range() -> String {
    if OLDEST_ABI_VERSION == ABI_VERSION {
        ABI_VERSION.to_string()
    } else {
        format!("{OLDEST_ABI_VERSION} to {ABI_VERSION}")
    }
}

/// Libraries loaded by this process, by canonical path: loading one twice gives the same plugin.
fn loaded() -> &'static Mutex<HashMap<PathBuf, Arc<Plugin>>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<Plugin>>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// Reads a string the plugin points at in its compatibility record.
fn read_str(s: RawStr) -> String {
    if s.ptr.is_null() || s.len == 0 {
        return String::new();
    }
    // SAFETY: stage 1 confirmed the library speaks ABI_VERSION, in which `RawStr` fields of the
    // compatibility record point at `len` bytes of the library's static data (built from
    // `&'static str`), and the library is never unloaded. Invalid UTF-8 is replaced, not trusted.
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr, s.len) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// What differs between a compatibility record and what this trawl expects of a plugin whose
/// version probe said `abi`.
pub fn compat_differences(
    record: &CompatRecord,
    abi: u32,
    name: &str,
    core: &str,
    wire: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    if record.abi_version != abi {
        out.push(format!(
            "its compatibility record says ABI {}, expected {abi}",
            record.abi_version
        ));
    }
    if record.record_size != COMPAT_RECORD_SIZE {
        out.push(format!(
            "its compatibility record is {} bytes, expected {COMPAT_RECORD_SIZE}",
            record.record_size
        ));
    }
    if wire != WIRE_FORMAT {
        out.push(format!("wire format `{wire}`, expected `{WIRE_FORMAT}`"));
    }
    let ours = trawl_core::engine::TRAWL_VERSION;
    if major_minor(core) != major_minor(ours) {
        out.push(format!(
            "built against trawl-core {core}, this trawl has {ours} (major.minor must match)"
        ));
    }
    match record.declarations {
        1 => {}
        0 => out.push(
            "it declares no plugin: add `trawl_plugin_abi::declare_plugin!();` to the crate"
                .to_string(),
        ),
        n => out.push(format!(
            "it holds {n} declare_plugin! lines (one library must be one plugin)"
        )),
    }
    if record.declarations == 1 && name.is_empty() {
        out.push("its declared name is empty".to_string());
    }
    let allowed = roles_supported(abi);
    let unsupported = record.roles & !allowed;
    if unsupported != 0 {
        out.push(format!(
            "it registers {} kinds, which cannot cross the plugin boundary in ABI {abi} ({} can; rebuild it for ABI {ABI_VERSION})",
            role_names(unsupported).join(" and "),
            role_plurals(allowed).join(", ")
        ));
    }
    out
}

fn major_minor(version: &str) -> (&str, &str) {
    let mut parts = version.split('.');
    (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
}

/// Loads and checks one library. Loading the same file again returns the plugin already loaded.
pub fn load(path: &Path) -> Result<Arc<Plugin>, LoadError> {
    let canonical = std::fs::canonicalize(path).map_err(|e| LoadError::Open {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if let Some(p) = loaded()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&canonical)
    {
        return Ok(p.clone());
    }
    let plugin = Arc::new(open(&canonical, path)?);
    loaded()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(canonical, plugin.clone());
    Ok(plugin)
}

/// Opens `canonical` (absolute, so the dynamic linker never searches its own paths instead);
/// messages name the file as the user wrote it, `shown`.
fn open(canonical: &Path, shown: &Path) -> Result<Plugin, LoadError> {
    let path = canonical;
    let owned = || shown.to_path_buf();
    // Stage 0, before any code of the library runs (its constructors included): read the file
    // and check that its dynamic symbol table exports trawl's ABI version symbol.
    let sha256 = inspect(path, shown)?;
    // SAFETY: loading a library runs its static initialisers; for a Rust plugin those are
    // inventory's constructors, which only link static list nodes. No entry point of trawl's
    // ABI runs until the checks below pass. The user named this file to be loaded.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| LoadError::Open {
        path: owned(),
        message: e.to_string(),
    })?;
    // Never unloaded: components built from the plugin keep function pointers into it.
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));

    // Stage 1: the bare ABI version, whose signature no ABI version may change.
    // SAFETY: every trawl plugin ABI declares this symbol as `extern "C" fn() -> u32`; a library
    // that exports the name with another type is not one we can help (and not a trawl plugin).
    let version: libloading::Symbol<extern "C" fn() -> u32> =
        unsafe { lib.get(SYMBOL_ABI_VERSION.as_bytes()) }
            .map_err(|_| LoadError::NotAPlugin { path: owned() })?;
    let abi = version();
    if !(OLDEST_ABI_VERSION..=ABI_VERSION).contains(&abi) {
        return Err(LoadError::AbiMismatch {
            path: owned(),
            found: abi,
            trawl: trawl_core::engine::TRAWL_VERSION.to_string(),
        });
    }

    let symbol = |name: &'static str, e: libloading::Error| LoadError::MissingSymbol {
        path: owned(),
        abi,
        symbol: name,
        message: e.to_string(),
    };
    // Stage 2: the compatibility record.
    // SAFETY: the library speaks ABI_VERSION (stage 1), which declares this signature.
    let compat: libloading::Symbol<extern "C" fn() -> CompatRecord> =
        unsafe { lib.get(SYMBOL_COMPAT.as_bytes()) }.map_err(|e| symbol(SYMBOL_COMPAT, e))?;
    let record = compat();
    let name = read_str(record.plugin_name);
    let core_version = read_str(record.core_version);
    let differences = compat_differences(
        &record,
        abi,
        &name,
        &core_version,
        &read_str(record.wire_format),
    );
    if !differences.is_empty() {
        return Err(LoadError::Incompatible {
            path: owned(),
            differences,
            trawl: trawl_core::engine::TRAWL_VERSION.to_string(),
        });
    }

    // Stage 3: the call entry points, all required.
    // SAFETY: ABI_VERSION (confirmed twice above) declares exactly this signature for this name,
    // and the library is never unloaded, so the copied function pointer stays valid.
    let alloc: AllocFn = *unsafe { lib.get::<AllocFn>(SYMBOL_ALLOC.as_bytes()) }
        .map_err(|e| symbol(SYMBOL_ALLOC, e))?;
    // SAFETY: as for `alloc`: the signature ABI_VERSION declares for this name.
    let call: CallFn = *unsafe { lib.get::<CallFn>(SYMBOL_CALL.as_bytes()) }
        .map_err(|e| symbol(SYMBOL_CALL, e))?;
    // SAFETY: as for `alloc`: the signature ABI_VERSION declares for this name.
    let free: FreeFn = *unsafe { lib.get::<FreeFn>(SYMBOL_FREE.as_bytes()) }
        .map_err(|e| symbol(SYMBOL_FREE, e))?;

    let mut plugin = Plugin {
        info: PluginLibrary {
            name: name.clone(),
            version: read_str(record.plugin_version),
            path: canonical.to_path_buf(),
            abi_version: record.abi_version,
            core_version,
            kinds: Vec::new(),
            sha256,
        },
        kinds: Vec::new(),
        alloc,
        call,
        free,
    };
    let kinds_error = |message: String| LoadError::Kinds {
        path: owned(),
        plugin: name.clone(),
        message,
    };
    let mut kinds = match plugin.call(&Request::Kinds) {
        Ok(Reply::Kinds { kinds }) => kinds,
        Ok(other) => return Err(kinds_error(format!("unexpected answer {other:?}"))),
        Err(e) => return Err(kinds_error(e.message)),
    };
    // The record's role bits and the kinds must agree, or the record lied.
    let bits = kinds.iter().fold(0, |b, k| b | role_bit(k.role));
    if bits != record.roles {
        return Err(kinds_error(format!(
            "its compatibility record offers {:?} but it registers {:?}",
            role_names(record.roles),
            role_names(bits)
        )));
    }
    // The library's registration order is the linker's; list kinds by role, then name.
    kinds.sort_by(|a, b| (a.role, &a.kind).cmp(&(b.role, &b.kind)));
    plugin.info.kinds = kinds
        .iter()
        .map(|k| format!("{}/{}", k.role, k.kind))
        .collect();
    plugin.kinds = kinds;
    Ok(plugin)
}

/// Reads the library file without loading it: it must be a shared library whose dynamic symbol
/// table exports trawl's ABI version symbol, which every plugin ABI has. Returns the file's
/// SHA-256 (hex).
fn inspect(path: &Path, shown: &Path) -> Result<String, LoadError> {
    use object::{Object, ObjectKind};
    use sha2::Digest;

    let not_loadable = |message: String| LoadError::Open {
        path: shown.to_path_buf(),
        message,
    };
    let data = std::fs::read(path).map_err(|e| not_loadable(e.to_string()))?;
    let sha256: String = sha2::Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let file = object::File::parse(&*data)
        .map_err(|e| not_loadable(format!("not a shared library ({e}); it was not loaded")))?;
    if file.kind() != ObjectKind::Dynamic {
        return Err(not_loadable(format!(
            "not a shared library (a {:?} object file); it was not loaded",
            file.kind()
        )));
    }
    let exports = file
        .exports()
        .map_err(|e| not_loadable(format!("unreadable symbol table ({e}); it was not loaded")))?;
    // Mach-O prefixes C names with an underscore.
    let exported = |name: &str| {
        exports.iter().any(|e| {
            let n = e.name();
            n == name.as_bytes() || n.strip_prefix(b"_") == Some(name.as_bytes())
        })
    };
    if !exported(SYMBOL_ABI_VERSION) {
        return Err(LoadError::NotAPlugin {
            path: shown.to_path_buf(),
        });
    }
    // The other entry points are checked after the version (stage 1), so that a plugin built
    // for another ABI is told so, whatever that ABI's symbols are.
    Ok(sha256)
}

/// Adds a loaded plugin's kinds to `registry`, each with a factory that builds it across the
/// boundary. A kind already registered (built in, or from another plugin) is refused.
pub fn register(registry: &mut Registry, plugin: &Arc<Plugin>) -> Result<(), LoadError> {
    if registry
        .libraries()
        .iter()
        .any(|l| l.path == plugin.info.path)
    {
        return Ok(());
    }
    for k in &plugin.kinds {
        let factory = host::factory(plugin, k.role, &k.kind);
        registry.add(Entry {
            role: k.role,
            kind: k.kind.clone(),
            description: k.description.clone(),
            version: k.version.clone(),
            origin: Origin::Plugin(plugin.info.path.clone()),
            factory,
        })?;
    }
    registry.add_library(plugin.info.clone());
    Ok(())
}

/// Loads each library and registers its kinds.
pub fn load_into(registry: &mut Registry, paths: &[PathBuf]) -> Result<(), LoadError> {
    for p in paths {
        let plugin = load(p)?;
        register(registry, &plugin)?;
    }
    Ok(())
}

/// The libraries in the folders of [`PLUGIN_PATH_VAR`]: every `.so`, `.dylib` or `.dll` file,
/// sorted by name within each folder. A folder that does not exist is skipped with a warning.
pub fn from_plugin_path() -> Vec<PathBuf> {
    let Some(var) = std::env::var_os(PLUGIN_PATH_VAR) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for dir in std::env::split_paths(&var).filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                let mut libs: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.is_file()
                            && matches!(
                                p.extension().and_then(|e| e.to_str()),
                                Some("so" | "dylib" | "dll")
                            )
                    })
                    .collect();
                libs.sort();
                out.extend(libs);
            }
            Err(e) => tracing::warn!(
                "{PLUGIN_PATH_VAR}: cannot read plugin folder {}: {e}",
                dir.display()
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(declarations: u32, roles: u32) -> CompatRecord {
        CompatRecord {
            abi_version: ABI_VERSION,
            record_size: COMPAT_RECORD_SIZE,
            declarations,
            roles,
            plugin_name: RawStr::new("p"),
            plugin_version: RawStr::new("1.0.0"),
            core_version: RawStr::new(trawl_core::engine::TRAWL_VERSION),
            wire_format: RawStr::new(WIRE_FORMAT),
        }
    }

    #[test]
    fn a_matching_record_has_no_differences() {
        let r = record(
            1,
            trawl_plugin_abi::ROLE_EVALUATOR | trawl_plugin_abi::ROLE_SCAFFOLD,
        );
        assert!(compat_differences(
            &r,
            ABI_VERSION,
            "p",
            trawl_core::engine::TRAWL_VERSION,
            WIRE_FORMAT
        )
        .is_empty());
    }

    #[test]
    fn every_difference_is_named_with_expected_and_found() {
        let mut r = record(
            0,
            trawl_plugin_abi::ROLE_SCAFFOLD | trawl_plugin_abi::ROLE_MODEL,
        );
        r.abi_version = 7;
        r.record_size = 12;
        let d = compat_differences(&r, 1, "", "9.3.1", "msgpack");
        let all = d.join("\n");
        for want in [
            "says ABI 7, expected 1",
            &format!("is 12 bytes, expected {COMPAT_RECORD_SIZE}"),
            &format!("wire format `msgpack`, expected `{WIRE_FORMAT}`"),
            "built against trawl-core 9.3.1",
            "declares no plugin",
            "registers scaffold and model kinds, which cannot cross the plugin boundary in ABI 1 (environments, evaluators, exporters can; rebuild it for ABI 2)",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert_eq!(d.len(), 6, "{all}");
    }

    #[test]
    fn two_declarations_are_refused() {
        let r = record(2, 0);
        let d = compat_differences(
            &r,
            ABI_VERSION,
            "p",
            trawl_core::engine::TRAWL_VERSION,
            WIRE_FORMAT,
        );
        assert_eq!(d.len(), 1);
        assert!(d[0].contains("2 declare_plugin! lines"), "{d:?}");
    }

    #[test]
    fn a_file_that_is_no_library_is_an_open_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("libnotes.so");
        std::fs::write(&p, "just text").unwrap();
        let e = load(&p).unwrap_err();
        assert!(matches!(e, LoadError::Open { .. }), "{e}");
        assert!(e.to_string().contains("libnotes.so"), "{e}");
        let missing = load(&dir.path().join("nope.so")).unwrap_err();
        assert!(missing.to_string().contains("nope.so"), "{missing}");
    }

    #[test]
    fn the_plugin_path_lists_libraries_in_each_folder_sorted() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for f in ["libz.so", "liba.so", "readme.md"] {
            std::fs::write(a.path().join(f), "").unwrap();
        }
        std::fs::write(b.path().join("libb.dylib"), "").unwrap();
        let joined = std::env::join_paths([a.path(), b.path()]).unwrap();
        // The only test that touches this variable.
        std::env::set_var(PLUGIN_PATH_VAR, &joined);
        let found = from_plugin_path();
        std::env::remove_var(PLUGIN_PATH_VAR);
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["liba.so", "libz.so", "libb.dylib"]);
    }
}
