//! Writing back what the reconciler computed: the status subresource by
//! server-side apply (one field manager, so the agent owns exactly the
//! status fields it sets), an Event per condition transition, and the
//! pre-restore snapshots a restore asks for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;

use super::{Ctx, FIELD_MANAGER};
use crate::api::{
    API_VERSION, Condition, Phase, VolumeRestore, VolumeRestoreStatus, VolumeSnapshot, VolumeSnapshotSchedule,
    VolumeSnapshotScheduleStatus, VolumeSnapshotStatus,
};
use crate::core::object::transitions;
use crate::core::snapshot as snap;

/// Writes a snapshot's status if it changed, and its transitions as Events.
pub(super) async fn write_snapshot(
    ctx: &Ctx,
    obj: &VolumeSnapshot,
    st: VolumeSnapshotStatus,
) -> Result<(), kube::Error> {
    let before = obj.status.clone().unwrap_or_default();
    if before == st {
        return Ok(());
    }
    events(ctx, obj, &before.conditions, &st.conditions, st.phase).await;
    apply_status(ctx, obj, "VolumeSnapshot", &st).await
}

/// Writes a schedule's status if it changed, and its transitions as Events.
pub(super) async fn write_schedule(
    ctx: &Ctx,
    obj: &VolumeSnapshotSchedule,
    st: VolumeSnapshotScheduleStatus,
) -> Result<(), kube::Error> {
    let before = obj.status.clone().unwrap_or_default();
    if before == st {
        return Ok(());
    }
    events(ctx, obj, &before.conditions, &st.conditions, None).await;
    apply_status(ctx, obj, "VolumeSnapshotSchedule", &st).await
}

/// Creates a schedule's snapshot for a slot, owned by the schedule. One
/// that exists already (a reconcile repeated after a crash) is left alone.
pub(super) async fn create_scheduled(
    ctx: &Ctx,
    owner: &VolumeSnapshotSchedule,
    mut s: VolumeSnapshot,
) -> Result<(), kube::Error> {
    let api: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &owner.namespace().unwrap_or_default());
    s.metadata.owner_references = Some(vec![OwnerReference {
        api_version: API_VERSION.into(),
        kind: "VolumeSnapshotSchedule".into(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    }]);
    match api.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &s).await {
        Ok(c) => {
            tracing::info!(object = c.name_any(), schedule = owner.name_any(), "Created scheduled VolumeSnapshot");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes a restore's status if it changed, and its transitions as Events.
pub(super) async fn write_restore(ctx: &Ctx, obj: &VolumeRestore, st: VolumeRestoreStatus) -> Result<(), kube::Error> {
    let before = obj.status.clone().unwrap_or_default();
    if before == st {
        return Ok(());
    }
    events(ctx, obj, &before.conditions, &st.conditions, st.phase).await;
    apply_status(ctx, obj, "VolumeRestore", &st).await
}

async fn apply_status<K, S>(ctx: &Ctx, obj: &K, kind: &str, st: &S) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: Serialize,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "apiVersion": API_VERSION, "kind": kind, "status": st });
    api.patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// One Event per condition whose status or reason changed. An Event that
/// cannot be written is logged, never fatal.
async fn events<K>(ctx: &Ctx, obj: &K, before: &[Condition], after: &[Condition], phase: Option<Phase>)
where
    K: Resource<DynamicType = ()>,
{
    for t in transitions(before, after, phase) {
        // An Event's note holds at most 1 kB.
        let mut note = t.message.clone();
        let mut end = note.len().min(1000);
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        let event = Event {
            type_: if t.warning { EventType::Warning } else { EventType::Normal },
            reason: t.reason.clone(),
            note: Some(note),
            action: t.type_.clone(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason = t.reason, "Could not record an Event");
        }
        if t.warning {
            tracing::warn!(object = obj.meta().name.as_deref().unwrap_or(""), reason = t.reason, "{}", t.message);
        } else {
            tracing::info!(object = obj.meta().name.as_deref().unwrap_or(""), reason = t.reason, "{}", t.message);
        }
    }
}

/// Creates the pre-restore snapshot a restore asked for, owned by the
/// restore (garbage-collected with it; its archive is retained), then its
/// status. One that exists already is left alone.
pub(super) async fn create_pre_restore(
    ctx: &Ctx,
    owner: &VolumeRestore,
    mut s: VolumeSnapshot,
) -> Result<(), kube::Error> {
    let ns = owner.namespace().unwrap_or_default();
    let api: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
    let mut st = s.status.take().unwrap_or_default();
    snap::on_node(&mut st, &ctx.node);
    s.metadata.owner_references = Some(vec![OwnerReference {
        api_version: API_VERSION.into(),
        kind: "VolumeRestore".into(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    }]);
    s.spec.node_name = Some(ctx.node.clone());
    let created =
        match api.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &s).await {
            Ok(c) => c,
            Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
            Err(e) => return Err(e),
        };
    tracing::info!(object = created.name_any(), "Created VolumeSnapshot (it keeps the data a restore replaced)");
    apply_status(ctx, &created, "VolumeSnapshot", &st).await
}
