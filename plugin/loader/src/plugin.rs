//! A loaded, checked plugin library and the one call that crosses its boundary.

use trawl_core::registry::PluginLibrary;
use trawl_plugin_abi::wire::{self, ErrorKind, KindInfo, Reply, Request, WireError};
use trawl_plugin_abi::RawBuffer;

pub(crate) type AllocFn = extern "C" fn(usize) -> RawBuffer;
pub(crate) type CallFn = extern "C" fn(u64) -> RawBuffer;
pub(crate) type FreeFn = extern "C" fn(u64);

/// A loaded, checked plugin library.
pub struct Plugin {
    pub(crate) info: PluginLibrary,
    pub(crate) kinds: Vec<KindInfo>,
    pub(crate) alloc: AllocFn,
    pub(crate) call: CallFn,
    pub(crate) free: FreeFn,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("info", &self.info).finish()
    }
}

impl Plugin {
    /// One blocking call across the boundary. Run it off the async workers.
    pub fn call(&self, request: &Request) -> Result<Reply, WireError> {
        let bytes = wire::encode(request);
        let buf = (self.alloc)(bytes.len());
        if buf.id == 0 || (buf.ptr.is_null() && !bytes.is_empty()) || buf.len != bytes.len() {
            return Err(WireError::new(
                ErrorKind::Protocol,
                format!("the plugin could not allocate {} bytes", bytes.len()),
            ));
        }
        if !bytes.is_empty() {
            // SAFETY: the plugin handed out `buf.len` writable bytes at `buf.ptr` (checked equal
            // to our length above) that stay put until the call below takes them; `bytes` is ours
            // and does not overlap the plugin's allocation.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.ptr, bytes.len()) };
        }
        let out = (self.call)(buf.id);
        if out.id == 0 {
            return Err(WireError::new(
                ErrorKind::Protocol,
                "the plugin returned no response buffer",
            ));
        }
        let copied = if out.len == 0 || out.ptr.is_null() {
            Vec::new()
        } else {
            // SAFETY: the plugin owns `out.len` readable bytes at `out.ptr` until we free `out.id`
            // below; we copy them first.
            unsafe { std::slice::from_raw_parts(out.ptr, out.len) }.to_vec()
        };
        (self.free)(out.id);
        let response: wire::Response = wire::decode(&copied).map_err(|e| {
            WireError::new(
                ErrorKind::Protocol,
                format!("cannot decode the plugin's answer: {e}"),
            )
        })?;
        response.into()
    }

    /// "plugin `name` (path)", for messages.
    pub fn label(&self) -> String {
        format!("plugin `{}` ({})", self.info.name, self.info.path.display())
    }

    /// A failed call as a sentence that names the plugin and the operation.
    pub fn describe(&self, op: &str, e: &WireError) -> String {
        match e.kind {
            ErrorKind::Panic => format!("{} panicked in `{op}`: {}", self.label(), e.message),
            ErrorKind::Protocol => format!("{}: `{op}` failed: {}", self.label(), e.message),
            _ => e.message.clone(),
        }
    }
}
