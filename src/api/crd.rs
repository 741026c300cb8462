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
