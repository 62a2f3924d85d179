//! A hand-written library that answers both of trawl's probes correctly (ABI 1 and a valid
//! compatibility record, laid out as `trawl_plugin_abi::CompatRecord` is) but exports none of the
//! call entry points. The loader must refuse it, naming the first missing symbol.

#[repr(C)]
pub struct RawStr {
    pub ptr: *const u8,
    pub len: usize,
}

#[repr(C)]
pub struct CompatRecord {
    pub abi_version: u32,
    pub record_size: u32,
    pub declarations: u32,
    pub roles: u32,
    pub plugin_name: RawStr,
    pub plugin_version: RawStr,
    pub core_version: RawStr,
    pub wire_format: RawStr,
}

const fn raw(s: &'static str) -> RawStr {
    RawStr {
        ptr: s.as_ptr(),
        len: s.len(),
    }
}

#[allow(unsafe_code)] // exporting a symbol
#[no_mangle]
pub extern "C" fn trawl_plugin_abi_version() -> u32 {
    1
}

#[allow(unsafe_code)] // exporting a symbol
#[no_mangle]
pub extern "C" fn trawl_plugin_compat() -> CompatRecord {
    CompatRecord {
        abi_version: 1,
        record_size: std::mem::size_of::<CompatRecord>() as u32,
        declarations: 1,
        roles: 1 << 2, // evaluator
        plugin_name: raw("missing-entry"),
        plugin_version: raw("0.0.1"),
        // The workspace's version, which is trawl-core's.
        core_version: raw(env!("CARGO_PKG_VERSION")),
        wire_format: raw("json+trawl.trajectory/1"),
    }
}
