//! AASX packages (IDTA-01005): an Open Packaging Conventions zip holding the environment JSON.
//!
//! Layout written (entries stored uncompressed; OPC allows it and the JSON is small):
//! `[Content_Types].xml`, `_rels/.rels` (→ `aasx/aasx-origin`), `aasx/aasx-origin`,
//! `aasx/_rels/aasx-origin.rels` (→ the spec part), `aasx/data.json` (the environment).
//! The gateway serves no file contents, so there are no supplementary files.

use std::io::{Seek, Write};

use serde_json::Value;
use zip::write::SimpleFileOptions;

const CONTENT_TYPES: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
  <Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml" />
  <Default Extension="json" ContentType="application/json" />
  <Override PartName="/aasx/aasx-origin" ContentType="text/plain" />
</Types>
"#;

const ROOT_RELS: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
  <Relationship Type="http://admin-shell.io/aasx/relationships/aasx-origin" Target="/aasx/aasx-origin" Id="r-origin" />
</Relationships>
"#;

const ORIGIN_RELS: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
  <Relationship Type="http://admin-shell.io/aasx/relationships/aas-spec" Target="/aasx/data.json" Id="r-spec" />
</Relationships>
"#;

/// Writes `environment` (AAS v3 JSON) as an AASX package to `out`.
pub fn write_aasx<W: Write + Seek>(environment: &Value, out: W) -> zip::result::ZipResult<W> {
    let mut zip = zip::ZipWriter::new(out);
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let json = serde_json::to_vec_pretty(environment).map_err(std::io::Error::other)?;
    let parts: [(&str, &[u8]); 5] = [
        ("[Content_Types].xml", CONTENT_TYPES.as_bytes()),
        ("_rels/.rels", ROOT_RELS.as_bytes()),
        ("aasx/aasx-origin", b"Intentionally empty."),
        ("aasx/_rels/aasx-origin.rels", ORIGIN_RELS.as_bytes()),
        ("aasx/data.json", &json),
    ];
    for (name, bytes) in parts {
        zip.start_file(name, opts)?;
        zip.write_all(bytes)?;
    }
    zip.finish()
}

/// Reads the environment JSON out of an AASX package: the part the `aas-spec` relationship of
/// `aasx/_rels/aasx-origin.rels` names (any `.json` part under `aasx/` when that is missing).
/// XML spec parts are not supported.
pub fn read_aasx(file: &std::path::Path) -> Result<Value, String> {
    let f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| format!("not an AASX (zip) package: {e}"))?;
    let rels = read_part(&mut zip, "aasx/_rels/aasx-origin.rels")
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let spec = rels.as_deref().and_then(|rels| {
        rels.split("<Relationship ")
            .filter(|r| r.contains("aas-spec"))
            .find_map(|r| Some(r.split("Target=\"").nth(1)?.split('"').next()?.to_string()))
    });
    let name = match spec {
        Some(t) => t,
        None => (0..zip.len())
            .filter_map(|i| zip.name_for_index(i).map(str::to_string))
            .find(|n| n.starts_with("aasx/") && n.ends_with(".json"))
            .ok_or("the package has no aas-spec relationship and no JSON part under aasx/")?,
    };
    if !name.ends_with(".json") {
        return Err(format!(
            "the package's spec part {name} is not JSON (only JSON is read)"
        ));
    }
    let bytes = read_part(&mut zip, &name)?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{name}: not valid JSON: {e}"))
}

/// The bytes of one part (`/aasx/data.json` or `aasx/data.json`).
fn read_part<R: std::io::Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut entry = zip
        .by_name(name.trim_start_matches('/'))
        .map_err(|e| format!("{name}: {e}"))?;
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_holds_the_parts_and_the_json() {
        let env = serde_json::json!({"submodels": [{"id": "urn:x", "modelType": "Submodel"}]});
        let bytes = write_aasx(&env, std::io::Cursor::new(Vec::new()))
            .unwrap()
            .into_inner();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let names: Vec<_> = archive.file_names().map(str::to_string).collect();
        for part in [
            "[Content_Types].xml",
            "_rels/.rels",
            "aasx/aasx-origin",
            "aasx/data.json",
        ] {
            assert!(names.iter().any(|n| n == part), "{part} missing: {names:?}");
        }
        let mut json = String::new();
        std::io::Read::read_to_string(&mut archive.by_name("aasx/data.json").unwrap(), &mut json)
            .unwrap();
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), env);
    }
}
