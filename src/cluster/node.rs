//! Which node's agent reconciles an object. One agent runs per node and
//! reads only its node's directories, so every snapshot belongs to exactly
//! one node: the one recorded in its status once captured, else
//! `spec.nodeName`, else (a PVC source) the node its bound PersistentVolume
//! is pinned to. A restore runs where its snapshot's archive is.

use k8s_openapi::api::core::v1::PersistentVolume;

use crate::api::VolumeSnapshot;
use crate::core::reasons;
use crate::reconcile::Unresolved;

/// The node of a snapshot. `pv`: the PersistentVolume bound to its PVC
/// source (the driver looks it up), when it has one.
pub fn snapshot_node(s: &VolumeSnapshot, pv: Option<&PersistentVolume>) -> Result<String, Unresolved> {
    if let Some(node) = s.status.as_ref().and_then(|st| st.node_name.clone()) {
        return Ok(node);
    }
    if let Some(node) = &s.spec.node_name {
        return Ok(node.clone());
    }
    let src = &s.spec.source;
    let needs_node = |what: &str| Unresolved {
        reason: reasons::NODE_UNKNOWN,
        message: format!(
            "{what} is on some node's disk, and the cluster does not say which: set spec.nodeName to the node that holds it"
        ),
    };
    if src.paths.is_some() {
        return Err(needs_node("source.paths"));
    }
    if src.archive.is_some() {
        return Err(needs_node("source.archive"));
    }
    if src.container.is_some() || src.volume.is_some() {
        return Err(Unresolved {
            reason: reasons::UNSUPPORTED_SOURCE,
            message: "source.container and source.volume name Docker objects: they are served by files mode (volsnap run), not by the Kubernetes controller; use source.persistentVolumeClaim".into(),
        });
    }
    let Some(pv) = pv else {
        return Err(Unresolved {
            reason: reasons::SOURCE_NOT_READY,
            message: "the PersistentVolumeClaim is not bound to a PersistentVolume yet".into(),
        });
    };
    pv_node(pv)
}

/// The node a PersistentVolume's data is on: `local` and `hostPath` volumes
/// pinned by node affinity to one node (`kubernetes.io/hostname`).
pub fn pv_node(pv: &PersistentVolume) -> Result<String, Unresolved> {
    let name = pv.metadata.name.as_deref().unwrap_or("?");
    let spec = pv.spec.clone().unwrap_or_default();
    let kind = if spec.local.is_some() {
        "local"
    } else if spec.host_path.is_some() {
        "hostPath"
    } else {
        return Err(Unresolved {
            reason: reasons::UNSUPPORTED_SOURCE,
            message: format!(
                "PersistentVolume {name} is a {} volume; volsnap reads only hostPath and local volumes, whose data is a directory on one node",
                volume_type(pv)
            ),
        });
    };
    let hosts: Vec<String> = spec
        .node_affinity
        .and_then(|a| a.required)
        .map(|r| r.node_selector_terms)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|t| t.match_expressions.unwrap_or_default())
        .filter(|e| e.key == "kubernetes.io/hostname" && e.operator == "In")
        .flat_map(|e| e.values.unwrap_or_default())
        .collect();
    match hosts.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Unresolved {
            reason: reasons::NODE_UNKNOWN,
            message: format!(
                "{kind} PersistentVolume {name} has no node affinity on kubernetes.io/hostname, so its node is unknown: set spec.nodeName"
            ),
        }),
        many => Err(Unresolved {
            reason: reasons::NODE_UNKNOWN,
            message: format!("{kind} PersistentVolume {name} may be on any of {}: set spec.nodeName", many.join(", ")),
        }),
    }
}

/// The host directory of a `local` or `hostPath` PersistentVolume.
pub fn pv_path(pv: &PersistentVolume) -> Option<String> {
    let spec = pv.spec.as_ref()?;
    spec.local.as_ref().map(|l| l.path.clone()).or_else(|| spec.host_path.as_ref().map(|h| h.path.clone()))
}

/// The volume type of a PersistentVolume, as its spec names it (`nfs`,
/// `csi (driver ebs.csi.aws.com)`, ...).
fn volume_type(pv: &PersistentVolume) -> String {
    const COMMON: [&str; 9] = [
        "accessModes",
        "capacity",
        "claimRef",
        "mountOptions",
        "nodeAffinity",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "volumeMode",
        "volumeAttributesClassName",
    ];
    if let Some(csi) = pv.spec.as_ref().and_then(|s| s.csi.as_ref()) {
        return format!("csi (driver {})", csi.driver);
    }
    serde_json::to_value(&pv.spec)
        .ok()
        .and_then(|v| v.as_object().and_then(|m| m.keys().find(|k| !COMMON.contains(&k.as_str())).cloned()))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PathSource, SnapshotSource, VolumeSnapshotSpec};

    fn snap(source: SnapshotSource, node: Option<&str>) -> VolumeSnapshot {
        VolumeSnapshot::new(
            "s",
            VolumeSnapshotSpec {
                source,
                quiesce: None,
                compression: Default::default(),
                deletion_policy: Default::default(),
                node_name: node.map(Into::into),
                stop_timeout_seconds: None,
                level: None,
            },
        )
    }

    fn pv(json: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "pv1"}, "spec": json})).unwrap()
    }

    fn pinned(kind: &str, path: &str, nodes: &[&str]) -> PersistentVolume {
        pv(serde_json::json!({
            kind: {"path": path},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": nodes}
            ]}]}}
        }))
    }

    #[test]
    fn paths_need_a_node_name() {
        let paths = SnapshotSource {
            paths: Some(vec![PathSource { name: None, path: "/srv/a".into() }]),
            ..Default::default()
        };
        let err = snapshot_node(&snap(paths.clone(), None), None).unwrap_err();
        assert_eq!(err.reason, reasons::NODE_UNKNOWN);
        assert!(err.message.contains("spec.nodeName"), "{}", err.message);
        assert_eq!(snapshot_node(&snap(paths, Some("n1")), None).unwrap(), "n1");
    }

    #[test]
    fn the_node_in_status_wins() {
        let mut s =
            snap(SnapshotSource { persistent_volume_claim: Some("db".into()), ..Default::default() }, Some("n1"));
        s.status = Some(crate::api::VolumeSnapshotStatus { node_name: Some("n2".into()), ..Default::default() });
        assert_eq!(snapshot_node(&s, None).unwrap(), "n2", "captured on n2: its archive is there");
    }

    #[test]
    fn pvc_node_comes_from_the_pv() {
        let s = snap(SnapshotSource { persistent_volume_claim: Some("db".into()), ..Default::default() }, None);
        assert_eq!(snapshot_node(&s, None).unwrap_err().reason, reasons::SOURCE_NOT_READY, "not bound yet");
        assert_eq!(snapshot_node(&s, Some(&pinned("local", "/mnt/disks/a", &["n3"]))).unwrap(), "n3");
        assert_eq!(snapshot_node(&s, Some(&pinned("hostPath", "/srv/a", &["n4"]))).unwrap(), "n4");
        let loose = pv(serde_json::json!({"hostPath": {"path": "/srv/a"}}));
        let err = snapshot_node(&s, Some(&loose)).unwrap_err();
        assert_eq!(err.reason, reasons::NODE_UNKNOWN);
        assert!(err.message.contains("no node affinity"), "{}", err.message);
        let two = pinned("local", "/mnt/a", &["n1", "n2"]);
        assert!(snapshot_node(&s, Some(&two)).unwrap_err().message.contains("n1, n2"));
        assert_eq!(pv_path(&pinned("local", "/mnt/disks/a", &["n3"])).as_deref(), Some("/mnt/disks/a"));
    }

    #[test]
    fn other_volume_types_are_named_in_the_refusal() {
        let nfs = pv(serde_json::json!({"nfs": {"server": "x", "path": "/e"}, "capacity": {"storage": "1Gi"}}));
        let err = pv_node(&nfs).unwrap_err();
        assert_eq!(err.reason, reasons::UNSUPPORTED_SOURCE);
        assert!(err.message.contains("is a nfs volume"), "{}", err.message);
        let csi = pv(serde_json::json!({"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "v"}}));
        assert!(pv_node(&csi).unwrap_err().message.contains("csi (driver ebs.csi.aws.com)"));
    }

    #[test]
    fn docker_sources_are_refused() {
        let s = snap(SnapshotSource { container: Some("app".into()), ..Default::default() }, None);
        assert_eq!(snapshot_node(&s, None).unwrap_err().reason, reasons::UNSUPPORTED_SOURCE);
    }
}
