//! The example manifests stay valid against the API types.

use std::fs;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

fn documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn example_manifests_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = Vec::new();
    for dir in [root.clone(), root.join("reference")] {
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        for f in files {
            for doc in documents(&f) {
                let kind = doc["kind"].as_str().unwrap_or("").to_string();
                if let Err(e) = volsnap::api::Object::from_value(doc) {
                    panic!("{}: {e}", f.display());
                }
                seen.push(format!("{}:{kind}", f.file_name().unwrap().to_string_lossy()));
            }
        }
    }
    for want in [
        "snapshot-paths.yaml:VolumeSnapshot",
        "snapshot-zstd.yaml:VolumeSnapshot",
        "restore.yaml:VolumeRestore",
        "schedule.yaml:VolumeSnapshotSchedule",
        "snapshot-container.yaml:VolumeSnapshot",
    ] {
        assert!(seen.iter().any(|s| s == want), "missing example {want}: {seen:?}");
    }
}
