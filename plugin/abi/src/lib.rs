//! trawl's plugin ABI: how a shared library offers components of every role (environments,
//! scaffolds, model backends, sandbox backends, evaluators, exporters) to a stock `trawl` binary.
//!
//! A plugin is an ordinary Rust crate built as both an `rlib` and a `cdylib`. Its kinds register
//! with `trawl_core::register!`, exactly as built-in kinds do, and one [`declare_plugin!`] line
//! names the plugin. Linking this crate puts five C entry points into the library; the loader
//! (`trawl-plugin-loader`) uses them in stages, and stops at the first that does not match:
//!
//! 1. [`SYMBOL_ABI_VERSION`] returns a bare `u32`. Nothing else is called unless it equals
//!    [`ABI_VERSION`], because every later signature and layout may differ between versions.
//! 2. [`SYMBOL_COMPAT`] returns a `#[repr(C)]` [`CompatRecord`]: the ABI version again, the
//!    record's own size, the plugin's name and version, the trawl-core version and wire format it
//!    was built with, and the roles it offers. The loader checks all of it.
//! 3. [`SYMBOL_ALLOC`], [`SYMBOL_CALL`] and [`SYMBOL_FREE`] carry requests: the host asks the
//!    plugin for a buffer, writes a JSON [`wire::Request`] into it, and calls; the plugin answers
//!    with a buffer holding a JSON [`wire::Response`], which the host copies and hands back to be
//!    freed. Memory is only ever freed by the side that allocated it. The first request lists
//!    the plugin's kinds.
//!
//! A scaffold in a plugin never calls into the host: it runs as a task on the plugin's runtime,
//! and every time it needs the host (a model call, an action in the episode) the plugin answers
//! the current request with a [`wire::ScaffoldStep::Ask`]; the host does the work and sends the
//! result back with [`wire::Request::Resume`]. So calls only ever go one way, the host keeps the
//! episode, the model and the transcript, and no function pointer of the host crosses.
//!
//! ABI 2 added scaffolds, model backends and sandbox backends, and the requests they need. A
//! host of ABI 2 still loads plugins built for ABI 1 (their requests are a subset of ABI 2's,
//! byte for byte), and refuses any newer ABI before running any of the library's code.
//!
//! No Rust trait object, `Box` or `String` crosses the boundary: Rust's layout is not stable
//! between compilers, and a loaded library has its own copies of tokio and of the `inventory`
//! registry. The plugin side runs its async code on its own runtime, and every entry point
//! catches panics and turns them into an error for that one call.

pub mod guest;
mod rollout;
pub mod wire;

pub use inventory;
pub use trawl_core;

/// The version of the C entry points and of [`CompatRecord`]. Bump it on any change to a
/// signature, to the record's layout, or to an incompatible change of the wire format.
pub const ABI_VERSION: u32 = 2;

/// The oldest ABI this host still loads: the entry points and [`CompatRecord`] are unchanged
/// since, and the requests of ABI 1 are a subset of today's.
pub const OLDEST_ABI_VERSION: u32 = 1;

/// The name of the wire format inside the buffers: JSON, with trawl-core's serde shapes of the
/// trajectory schema it names.
pub const WIRE_FORMAT: &str = "json+trawl.trajectory/1";

/// `extern "C" fn() -> u32`: the ABI version the library was built for.
pub const SYMBOL_ABI_VERSION: &str = "trawl_plugin_abi_version";
/// `extern "C" fn() -> CompatRecord`.
pub const SYMBOL_COMPAT: &str = "trawl_plugin_compat";
/// `extern "C" fn(len: usize) -> RawBuffer`: a zeroed buffer of `len` bytes for a request.
pub const SYMBOL_ALLOC: &str = "trawl_plugin_alloc";
/// `extern "C" fn(request: u64) -> RawBuffer`: runs the request in the buffer with that id (and
/// frees it); returns the response's buffer.
pub const SYMBOL_CALL: &str = "trawl_plugin_call";
/// `extern "C" fn(id: u64)`: frees a buffer the plugin handed out.
pub const SYMBOL_FREE: &str = "trawl_plugin_free";

/// A string with `'static` lifetime inside the plugin, as a pointer and a length in bytes (UTF-8,
/// not NUL-terminated).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl RawStr {
    pub const fn new(s: &'static str) -> Self {
        RawStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }
}

/// A buffer owned by the plugin: `id` names it to [`SYMBOL_FREE`] and [`SYMBOL_CALL`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawBuffer {
    pub ptr: *mut u8,
    pub len: usize,
    pub id: u64,
}

/// Bits of [`CompatRecord::roles`].
pub const ROLE_ENVIRONMENT: u32 = 1;
pub const ROLE_SCAFFOLD: u32 = 1 << 1;
pub const ROLE_EVALUATOR: u32 = 1 << 2;
pub const ROLE_EXPORTER: u32 = 1 << 3;
pub const ROLE_MODEL: u32 = 1 << 4;
pub const ROLE_SANDBOX: u32 = 1 << 5;

/// The roles that can cross the boundary in this ABI version.
pub const ROLES_SUPPORTED: u32 =
    ROLE_ENVIRONMENT | ROLE_EVALUATOR | ROLE_EXPORTER | ROLE_SCAFFOLD | ROLE_MODEL | ROLE_SANDBOX;

/// The roles a plugin built for ABI `abi` may offer (none for an ABI this host does not load).
pub fn roles_supported(abi: u32) -> u32 {
    match abi {
        1 => ROLE_ENVIRONMENT | ROLE_EVALUATOR | ROLE_EXPORTER,
        ABI_VERSION => ROLES_SUPPORTED,
        _ => 0,
    }
}

/// The bit of one role.
pub fn role_bit(role: trawl_core::Role) -> u32 {
    use trawl_core::Role;
    match role {
        Role::Environment => ROLE_ENVIRONMENT,
        Role::Scaffold => ROLE_SCAFFOLD,
        Role::Evaluator => ROLE_EVALUATOR,
        Role::Exporter => ROLE_EXPORTER,
        Role::Model => ROLE_MODEL,
        Role::Sandbox => ROLE_SANDBOX,
    }
}

/// The roles of a bit set, by name.
pub fn role_names(bits: u32) -> Vec<&'static str> {
    trawl_core::Role::ALL
        .into_iter()
        .filter(|r| bits & role_bit(*r) != 0)
        .map(|r| r.as_str())
        .collect()
}

/// The roles of a bit set, in the plural: `environments, sandboxes`.
pub fn role_plurals(bits: u32) -> Vec<&'static str> {
    trawl_core::Role::ALL
        .into_iter()
        .filter(|r| bits & role_bit(*r) != 0)
        .map(|r| r.plural())
        .collect()
}

/// What a plugin says about itself before any of its code runs (stage 2). Its strings point into
/// the library's static data.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CompatRecord {
    /// [`ABI_VERSION`] as the plugin was built.
    pub abi_version: u32,
    /// `size_of::<CompatRecord>()` as the plugin was built.
    pub record_size: u32,
    /// How many [`declare_plugin!`] lines the library holds: exactly one is valid.
    pub declarations: u32,
    /// [`role_bit`]s of the kinds it registers.
    pub roles: u32,
    pub plugin_name: RawStr,
    pub plugin_version: RawStr,
    /// The trawl-core version it was built against.
    pub core_version: RawStr,
    /// [`WIRE_FORMAT`] as the plugin was built.
    pub wire_format: RawStr,
}

/// The size the host expects [`CompatRecord`] to have.
pub const COMPAT_RECORD_SIZE: u32 = std::mem::size_of::<CompatRecord>() as u32;

/// A plugin's name and version, submitted by [`declare_plugin!`].
#[derive(Debug)]
pub struct Declaration {
    pub name: &'static str,
    pub version: &'static str,
    /// The crate that declares the plugin: only the kinds this crate registers are exported, so
    /// a plugin that links a trawl crate for its helpers does not offer that crate's kinds too.
    pub crate_name: &'static str,
}

inventory::collect!(Declaration);

/// Names the plugin a crate builds. Put it once in the plugin crate's `lib.rs`; with no
/// arguments it uses the package's name and version:
///
/// ```ignore
/// trawl_plugin_abi::declare_plugin!();
/// trawl_plugin_abi::declare_plugin!(name = "keyword-rubric", version = "1.2.0");
/// ```
///
/// The kinds themselves register with `trawl_core::register!`, so the same crate linked as an
/// rlib adds them to a binary's built-in kinds instead.
#[macro_export]
macro_rules! declare_plugin {
    () => {
        $crate::declare_plugin!(
            name = env!("CARGO_PKG_NAME"),
            version = env!("CARGO_PKG_VERSION")
        );
    };
    (name = $name:expr, version = $version:expr $(,)?) => {
        $crate::inventory::submit! {
            $crate::Declaration { name: $name, version: $version, crate_name: env!("CARGO_CRATE_NAME") }
        }
    };
}
