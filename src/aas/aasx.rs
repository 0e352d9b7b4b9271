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
