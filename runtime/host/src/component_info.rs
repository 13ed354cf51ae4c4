//! A component's imports and exports read straight from its bytes with wasmparser, without
//! compiling it: wasmtime does not treat compile-time denial of service as a bug, so
//! untrusted bytes are looked at, never compiled.

use wasmparser::{Parser, Payload};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentInfo {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

pub fn read_component_info(bytes: &[u8]) -> Result<ComponentInfo, String> {
    let mut info = ComponentInfo::default();
    let mut depth = 0usize;
    let mut is_component = false;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("not a valid WebAssembly component: {e}"))? {
            Payload::Version { encoding, .. } => {
                if depth == 0 {
                    is_component = matches!(encoding, wasmparser::Encoding::Component);
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    info.imports
                        .push(import.map_err(|e| e.to_string())?.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    info.exports
                        .push(export.map_err(|e| e.to_string())?.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    if !is_component {
        return Err("this is a core WebAssembly module, not a component; build for wasm32-wasip2".into());
    }
    Ok(info)
}
