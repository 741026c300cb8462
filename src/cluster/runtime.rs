//! The cluster as the reconciler's runtime: a PersistentVolumeClaim is the
//! directory of its bound `local` or `hostPath` PersistentVolume, and the
//! workload behind it is the Deployments and StatefulSets whose pods mount
//! it, stopped by scaling them to zero and started by scaling them back to
//! the replica count journaled with them.
//!
//! The reconciler and the engine are synchronous (they run on threads of
//! their own), so this runtime owns a small Tokio runtime and its own API
//! client, and runs each call to completion on it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};

use super::node::{pv_node, pv_path};
use crate::api::{PathSource, SnapshotSource};
use crate::core::reasons;
use crate::engine::paths::{PathPolicy, Resolution};
use crate::engine::workload::{Purpose, StoppedUnit, Workload, WorkloadError};
use crate::reconcile::{Runtime, Unresolved};

/// How long stopping waits for a scaled workload's pods to be gone, unless
/// the spec says otherwise.
const POD_GONE_TIMEOUT: Duration = Duration::from_secs(120);

/// The cluster runtime of one node's agent.
pub struct KubeRuntime {
    workload: Arc<ScaledWorkloads>,
}

impl KubeRuntime {
    /// A runtime for the agent of `node`, with a client made from `config`.
    pub fn new(config: kube::Config, node: String) -> Result<KubeRuntime, kube::Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("volsnap-kube")
            .enable_all()
            .build()
            .map_err(|e| kube::Error::Service(Box::new(e)))?;
        let client = rt.block_on(async { Client::try_from(config) })?;
        Ok(KubeRuntime {
            workload: Arc::new(ScaledWorkloads { rt: Some(rt), client, node, claims: Mutex::new(HashMap::new()) }),
        })
    }
}

impl Runtime for KubeRuntime {
    fn resolve(
        &self,
        namespace: &str,
        source: &SnapshotSource,
        policy: &PathPolicy,
        _verify_live: bool,
    ) -> Result<Resolution, Unresolved> {
        let Some(claim) = &source.persistent_volume_claim else {
            return Err(Unresolved {
                reason: reasons::UNSUPPORTED_SOURCE,
                message: "only source.persistentVolumeClaim names a workload in a cluster (container and volume sources are files mode's)".into(),
            });
        };
        let w = &self.workload;
        let pv = w.block_on(bound_volume(&w.client, namespace, claim))?;
        let node = pv_node(&pv)?;
        if node != w.node {
            return Err(Unresolved {
                reason: reasons::NODE_UNKNOWN,
                message: format!("PersistentVolumeClaim {namespace}/{claim} is on node {node}, not on {}", w.node),
            });
        }
        let path = pv_path(&pv).unwrap_or_default();
        let resolution = policy.resolve(&[PathSource { name: Some(claim.clone()), path: path.clone() }]);
        for v in &resolution.volumes {
            w.claims
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(v.path.clone(), (namespace.into(), claim.clone()));
        }
        Ok(resolution)
    }

    fn workload_ready(&self) -> Result<(), String> {
        Ok(())
    }

    fn workload(&self) -> Arc<dyn Workload> {
        self.workload.clone()
    }

    fn trusted_root(&self) -> Option<PathBuf> {
        None
    }
}

/// The PersistentVolume bound to a claim.
async fn bound_volume(client: &Client, namespace: &str, claim: &str) -> Result<PersistentVolume, Unresolved> {
    let api_failed =
        |e: kube::Error| Unresolved { reason: unavailable_or(&e, reasons::SOURCE_NOT_FOUND), message: e.to_string() };
    let pvc =
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace).get_opt(claim).await.map_err(api_failed)?;
    let Some(pvc) = pvc else {
        return Err(Unresolved {
            reason: reasons::SOURCE_NOT_FOUND,
            message: format!("PersistentVolumeClaim {namespace}/{claim} does not exist"),
        });
    };
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let Some(volume) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|_| bound) else {
        return Err(Unresolved {
            reason: reasons::SOURCE_NOT_READY,
            message: format!("PersistentVolumeClaim {namespace}/{claim} is not bound to a PersistentVolume yet"),
        });
    };
    Api::<PersistentVolume>::all(client.clone()).get(&volume).await.map_err(api_failed)
}

/// `ApiServerUnavailable` when the API server could not be asked at all,
/// otherwise `answered`.
fn unavailable_or(e: &kube::Error, answered: &'static str) -> &'static str {
    if matches!(e, kube::Error::Api(_)) { answered } else { reasons::API_SERVER_UNAVAILABLE }
}

/// Deployments and StatefulSets, stopped by scaling to zero.
struct ScaledWorkloads {
    /// Taken on drop: see the `Drop` impl.
    rt: Option<tokio::runtime::Runtime>,
    client: Client,
    node: String,
    /// Which claim each resolved directory belongs to.
    claims: Mutex<HashMap<PathBuf, (String, String)>>,
}

/// A unit's kind, as journaled.
const DEPLOYMENT: &str = "deployment";
const STATEFULSET: &str = "statefulset";
const POD: &str = "pod";

fn failed(op: &'static str, unit: &str, e: kube::Error) -> WorkloadError {
    if matches!(e, kube::Error::Api(_)) {
        WorkloadError::refused(op, unit, e.to_string())
    } else {
        WorkloadError::unreachable(op, unit, e.to_string())
    }
}

impl ScaledWorkloads {
    /// The pods that mount any of `claims` (namespace, claim), not being
    /// deleted.
    async fn pods_of(&self, claims: &BTreeSet<(String, String)>) -> Result<Vec<Pod>, WorkloadError> {
        let mut out = Vec::new();
        let namespaces: BTreeSet<&String> = claims.iter().map(|(ns, _)| ns).collect();
        for ns in namespaces {
            let pods = Api::<Pod>::namespaced(self.client.clone(), ns)
                .list(&ListParams::default())
                .await
                .map_err(|e| failed("listing pods", ns, e))?;
            for pod in pods.items {
                let uses = pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).is_some_and(|vols| {
                    vols.iter().any(|v| {
                        v.persistent_volume_claim
                            .as_ref()
                            .is_some_and(|c| claims.contains(&(ns.clone(), c.claim_name.clone())))
                    })
                });
                if uses && pod.metadata.deletion_timestamp.is_none() {
                    out.push(pod);
                }
            }
        }
        Ok(out)
    }

    /// The Deployment or StatefulSet that runs a pod (through its
    /// ReplicaSet).
    async fn owner_of(&self, pod: &Pod) -> Result<(&'static str, String, String), WorkloadError> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let unmanaged = || {
            WorkloadError::refused(
                "stopping",
                format!("pod {ns}/{pod_name}"),
                "it is not run by a Deployment or StatefulSet, so volsnap cannot stop it and start it again",
            )
        };
        let owner =
            pod.metadata.owner_references.clone().unwrap_or_default().into_iter().find(|o| o.controller == Some(true));
        let Some(owner) = owner else { return Err(unmanaged()) };
        match owner.kind.as_str() {
            "StatefulSet" => Ok((STATEFULSET, ns, owner.name)),
            "ReplicaSet" => {
                let rs = Api::<ReplicaSet>::namespaced(self.client.clone(), &ns)
                    .get(&owner.name)
                    .await
                    .map_err(|e| failed("finding the owner of", &format!("pod {ns}/{pod_name}"), e))?;
                let deployment =
                    rs.metadata.owner_references.unwrap_or_default().into_iter().find(|o| o.kind == "Deployment");
                match deployment {
                    Some(d) => Ok((DEPLOYMENT, ns, d.name)),
                    None => Err(unmanaged()),
                }
            }
            _ => Err(unmanaged()),
        }
    }

    fn scale_api(&self, kind: &str, ns: &str) -> ScaleApi {
        if kind == STATEFULSET {
            ScaleApi::StatefulSet(Api::namespaced(self.client.clone(), ns))
        } else {
            ScaleApi::Deployment(Api::namespaced(self.client.clone(), ns))
        }
    }

    async fn plan(&self, dirs: &[PathBuf], purpose: Purpose) -> Result<Vec<StoppedUnit>, WorkloadError> {
        let claims: BTreeSet<(String, String)> = {
            let known = self.claims.lock().unwrap_or_else(|e| e.into_inner());
            dirs.iter().filter_map(|d| known.get(d).cloned()).collect()
        };
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let pods = self.pods_of(&claims).await?;
        if purpose == Purpose::Capture {
            // Holding still means freezing the running containers on this
            // node; pods not running here have nothing to hold.
            return Ok(pods
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(self.node.as_str()))
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .map(|p| StoppedUnit {
                    kind: POD.into(),
                    id: p.metadata.uid.clone().unwrap_or_default(),
                    name: format!(
                        "{}/{}",
                        p.metadata.namespace.as_deref().unwrap_or(""),
                        p.metadata.name.as_deref().unwrap_or("")
                    ),
                    paused: true,
                    replicas: None,
                })
                .collect());
        }
        let mut owners = BTreeMap::new();
        for pod in &pods {
            let (kind, ns, name) = self.owner_of(pod).await?;
            owners.insert((kind, ns, name), ());
        }
        let mut units = Vec::new();
        for (kind, ns, name) in owners.into_keys() {
            let unit = format!("{kind} {ns}/{name}");
            let scale =
                self.scale_api(kind, &ns).get(&name).await.map_err(|e| failed("reading the scale of", &unit, e))?;
            let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
            // Scaled to zero by someone else: its pods are going away, and it
            // stays at zero.
            if replicas > 0 {
                units.push(StoppedUnit {
                    kind: kind.into(),
                    id: format!("{ns}/{name}"),
                    name: format!("{ns}/{name}"),
                    paused: false,
                    replicas: Some(replicas),
                });
            }
        }
        Ok(units)
    }

    async fn scale_to_zero(&self, units: &[StoppedUnit], timeout: Duration) -> Result<Vec<String>, WorkloadError> {
        for u in units.iter().rev() {
            let (ns, name) = u.id.split_once('/').unwrap_or(("default", &u.id));
            self.scale_api(&u.kind, ns).set(name, 0).await.map_err(|e| failed("stopping", &self.describe(u), e))?;
        }
        let deadline = Instant::now() + timeout;
        for u in units {
            let (ns, name) = u.id.split_once('/').unwrap_or(("default", &u.id));
            loop {
                let scale = self
                    .scale_api(&u.kind, ns)
                    .get(name)
                    .await
                    .map_err(|e| failed("stopping", &self.describe(u), e))?;
                let left = scale.status.map(|s| s.replicas).unwrap_or(0);
                if left == 0 {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(WorkloadError::refused(
                        "stopping",
                        self.describe(u),
                        format!("{left} pod(s) still run {}s after it was scaled to 0", timeout.as_secs()),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(Vec::new())
    }

    async fn scale_back(&self, units: &[StoppedUnit]) -> Result<Vec<String>, WorkloadError> {
        let mut warnings = Vec::new();
        for u in units {
            let Some(replicas) = u.replicas else { continue };
            let (ns, name) = u.id.split_once('/').unwrap_or(("default", &u.id));
            let api = self.scale_api(&u.kind, ns);
            match api.get(name).await {
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    warnings.push(format!("{} was deleted meanwhile; it was not started again", self.describe(u)));
                    continue;
                }
                Err(e) => return Err(failed("starting", &self.describe(u), e)),
                Ok(scale) => {
                    let now = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
                    if now != 0 {
                        warnings.push(format!(
                            "{} was scaled to {now} by someone else meanwhile; it was left as it is",
                            self.describe(u)
                        ));
                        continue;
                    }
                }
            }
            api.set(name, replicas).await.map_err(|e| failed("starting", &self.describe(u), e))?;
        }
        Ok(warnings)
    }
}

impl ScaledWorkloads {
    /// Runs one API conversation to completion on the runtime's own threads.
    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.as_ref().expect("runtime present until drop").block_on(f)
    }
}

impl Drop for ScaledWorkloads {
    /// The last reference may go inside the agent's async shutdown, where a
    /// runtime must not block while it is dropped: let it wind down in the
    /// background.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Workload for ScaledWorkloads {
    fn plan_stop(&self, dirs: &[PathBuf], purpose: Purpose) -> Result<Vec<StoppedUnit>, WorkloadError> {
        self.block_on(self.plan(dirs, purpose))
    }

    fn stop(&self, units: &[StoppedUnit], timeout_seconds: Option<u32>) -> Result<Vec<String>, WorkloadError> {
        let timeout = timeout_seconds.map_or(POD_GONE_TIMEOUT, |s| Duration::from_secs(u64::from(s)));
        self.block_on(self.scale_to_zero(units, timeout))
    }

    fn can_pause(&self) -> bool {
        false
    }

    fn pause(&self, units: &[StoppedUnit]) -> Result<Vec<StoppedUnit>, WorkloadError> {
        match units.first() {
            None => Ok(Vec::new()),
            Some(u) => Err(WorkloadError::refused(
                "pausing",
                self.describe(u),
                "this agent cannot freeze running pods (no access to their cgroups); use quiesce: Stop",
            )),
        }
    }

    fn start(&self, units: &[StoppedUnit]) -> Result<Vec<String>, WorkloadError> {
        self.block_on(self.scale_back(units))
    }

    fn describe(&self, u: &StoppedUnit) -> String {
        match u.kind.as_str() {
            DEPLOYMENT => format!("Deployment {}", u.name),
            STATEFULSET => format!("StatefulSet {}", u.name),
            _ => format!("{} {}", u.kind, u.name),
        }
    }

    fn runtime_name(&self) -> &'static str {
        "the Kubernetes API server"
    }

    fn unavailable_reason(&self) -> &'static str {
        reasons::API_SERVER_UNAVAILABLE
    }
}

/// The scale subresource of a Deployment or a StatefulSet.
enum ScaleApi {
    Deployment(Api<Deployment>),
    StatefulSet(Api<StatefulSet>),
}

impl ScaleApi {
    async fn get(&self, name: &str) -> Result<k8s_openapi::api::autoscaling::v1::Scale, kube::Error> {
        match self {
            ScaleApi::Deployment(a) => a.get_scale(name).await,
            ScaleApi::StatefulSet(a) => a.get_scale(name).await,
        }
    }

    async fn set(&self, name: &str, replicas: i32) -> Result<(), kube::Error> {
        let patch = Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}}));
        let pp = PatchParams::default();
        match self {
            ScaleApi::Deployment(a) => a.patch_scale(name, &pp, &patch).await.map(|_| ()),
            ScaleApi::StatefulSet(a) => a.patch_scale(name, &pp, &patch).await.map(|_| ()),
        }
    }
}
