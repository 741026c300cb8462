//! The CustomResourceDefinitions, generated from the types.

use kube::CustomResourceExt;

use super::{VolumeRestore, VolumeSnapshot, VolumeSnapshotSchedule};

/// All three CRDs as one multi-document YAML stream, as `volsnap crds`
/// prints it and `crds/volsnap.dev.yaml` holds it.
pub fn all_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in [VolumeSnapshot::crd(), VolumeRestore::crd(), VolumeSnapshotSchedule::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_rules_and_columns() {
        let yaml = all_yaml().unwrap();
        for short in ["- vsnap", "- vrestore", "- vsched"] {
            assert!(yaml.contains(short), "missing shortName {short}");
        }
        assert!(!yaml.lines().any(|l| l.trim() == "- vs"), "must never claim the CSI shortName vs");
        assert!(yaml.contains("- volsnap"), "category volsnap");
        assert!(yaml.contains("self.spec == oldSelf.spec"), "snapshot spec immutability rule");
        assert_eq!(yaml.matches("self.spec == oldSelf.spec").count(), 1, "not inside the schedule template");
        assert!(yaml.contains("has(self.persistentVolumeClaim)"), "one-of rule on spec.source");
        assert!(yaml.contains("has(self.targetPath)"), "restore quiesce rule");
        assert!(!yaml.contains("additionalProperties: false"), "structural schema");
        let snap = VolumeSnapshot::crd();
        let cols = snap.spec.versions[0].additional_printer_columns.as_ref().unwrap();
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Phase", "Size", "Volumes", "Compression", "Archive", "Age"]);
        assert!(snap.spec.versions[0].subresources.as_ref().unwrap().status.is_some());
    }
}
