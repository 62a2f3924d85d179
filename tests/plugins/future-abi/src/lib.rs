//! A library that says it speaks trawl plugin ABI 3, as a plugin built against a newer trawl
//! would. The loader must refuse it after the version probe, without calling anything else: the
//! compatibility entry point here leaves a marker file behind if it is ever called.

/// One more than the ABI trawl speaks today (the test checks that this still holds).
pub const CLAIMED_ABI: u32 = 3;

#[allow(unsafe_code)] // exporting a symbol
#[no_mangle]
pub extern "C" fn trawl_plugin_abi_version() -> u32 {
    CLAIMED_ABI
}

#[allow(unsafe_code)] // exporting a symbol
#[no_mangle]
pub extern "C" fn trawl_plugin_compat() -> u64 {
    if let Some(marker) = std::env::var_os("TRAWL_TEST_FUTURE_ABI_MARKER") {
        let _ = std::fs::write(marker, "trawl_plugin_compat was called");
    }
    0
}
