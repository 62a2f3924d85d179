//! A plugin exactly as trawl plugin ABI 1 laid it out, written by hand without
//! trawl-plugin-abi: the five entry points, the compatibility record, and the JSON requests of
//! ABI 1 (`kinds`, `build`, `evaluate`, `release`). It offers one evaluator, `v1_nonempty`
//! (success when the rollout submitted something non-blank). A host of a later ABI must keep
//! loading it.
//!
//! With `TRAWL_TEST_V1_CLAIM` set to a role (`scaffold`, `model` or `sandbox`), its record also
//! claims a kind of that role, which ABI 1 could not carry: the host must refuse it.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};

#[repr(C)]
pub struct RawStr {
    pub ptr: *const u8,
    pub len: usize,
}

#[repr(C)]
pub struct RawBuffer {
    pub ptr: *mut u8,
    pub len: usize,
    pub id: u64,
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

const ROLE_SCAFFOLD: u32 = 1 << 1;
const ROLE_EVALUATOR: u32 = 1 << 2;
const ROLE_MODEL: u32 = 1 << 4;
const ROLE_SANDBOX: u32 = 1 << 5;

#[allow(unsafe_code)] // exporting a symbol
#[no_mangle]
pub extern "C" fn trawl_plugin_abi_version() -> u32 {
    1
}

#[allow(unsafe_code)] // exporting a symbol
#[no_mangle]
pub extern "C" fn trawl_plugin_compat() -> CompatRecord {
    let claimed = match std::env::var("TRAWL_TEST_V1_CLAIM").as_deref() {
        Ok("scaffold") => ROLE_SCAFFOLD,
        Ok("model") => ROLE_MODEL,
        Ok("sandbox") => ROLE_SANDBOX,
        _ => 0,
    };
    CompatRecord {
        abi_version: 1,
        record_size: std::mem::size_of::<CompatRecord>() as u32,
        declarations: 1,
        roles: ROLE_EVALUATOR | claimed,
        plugin_name: raw("abi-v1"),
        plugin_version: raw("1.0.0"),
        // The workspace's version, which is trawl-core's.
        core_version: raw(env!("CARGO_PKG_VERSION")),
        wire_format: raw("json+trawl.trajectory/1"),
    }
}

#[derive(Default)]
struct Buffers {
    next: u64,
    held: HashMap<u64, Vec<u8>>,
}

fn buffers() -> std::sync::MutexGuard<'static, Buffers> {
    static B: OnceLock<Mutex<Buffers>> = OnceLock::new();
    B.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn keep(bytes: Vec<u8>) -> RawBuffer {
    let mut b = buffers();
    b.next += 1;
    let id = b.next;
    let buf = b.held.entry(id).or_insert(bytes);
    RawBuffer {
        ptr: buf.as_mut_ptr(),
        len: buf.len(),
        id,
    }
}

#[allow(unsafe_code)] // exporting a symbol
#[no_mangle]
pub extern "C" fn trawl_plugin_alloc(len: usize) -> RawBuffer {
    keep(vec![0; len])
}

#[allow(unsafe_code)] // exporting a symbol
#[no_mangle]
pub extern "C" fn trawl_plugin_free(id: u64) {
    buffers().held.remove(&id);
}

#[allow(unsafe_code)] // exporting a symbol
#[no_mangle]
pub extern "C" fn trawl_plugin_call(request: u64) -> RawBuffer {
    let bytes = buffers().held.remove(&request).unwrap_or_default();
    let answer = match serde_json::from_slice::<Value>(&bytes) {
        Ok(r) => answer(&r),
        Err(e) => error("protocol", &format!("cannot decode the request: {e}")),
    };
    keep(answer.to_string().into_bytes())
}

fn error(kind: &str, message: &str) -> Value {
    json!({ "error": { "kind": kind, "message": message } })
}

fn answer(request: &Value) -> Value {
    match request["op"].as_str().unwrap_or_default() {
        "kinds" => json!({ "ok": { "reply": "kinds", "kinds": [{
            "role": "evaluator",
            "kind": "v1_nonempty",
            "description": "Success when the rollout submitted something (ABI 1 fixture)",
            "version": "1.0.0"
        }] } }),
        "build" if request["kind"] == "v1_nonempty" => json!({ "ok": {
            "reply": "built", "handle": 1, "built": { "role": "evaluator", "name": "v1_nonempty" }
        } }),
        "evaluate" => {
            let submission = request["record"]["outcome"]["submission"]
                .as_str()
                .unwrap_or_default();
            let success = !submission.trim().is_empty();
            json!({ "ok": { "reply": "evaluation", "evaluation": {
                "evaluator": "v1_nonempty",
                "reward": if success { 1.0 } else { 0.0 },
                "success": success,
                "components": {},
                "details": { "abi": 1 }
            } } })
        }
        "release" => json!({ "ok": { "reply": "done" } }),
        other => error("protocol", &format!("ABI 1 has no request `{other}`")),
    }
}
