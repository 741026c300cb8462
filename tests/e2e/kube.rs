//! Kubernetes mode against a real control plane: etcd, kube-apiserver and
//! kube-controller-manager built from their Go modules and started by
//! `make test` (tests/k8s/cluster-up.sh; no scheduler or kubelet, so pods
//! stay Pending). The CRDs and `manifests/` are applied with kubectl, and
//! every agent runs with a token of the manifests' ServiceAccount: the RBAC
//! under test is the one users install.
//!
//! Each test works in a namespace of its own and runs its own agent with a
//! node name of its own, so tests do not see each other's objects. The test
//! that restarts the API server takes [`CLUSTER_LOCK`] for writing; the
//! others hold it for reading. Without a cluster the tests skip, unless
//! `VOLSNAP_REQUIRE_K8S=1` (set by `make test`) makes that a failure.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// Held for reading by every test, for writing by the one that restarts
/// the API server.
static CLUSTER_LOCK: RwLock<()> = RwLock::new(());

/// The test cluster, once set up (CRDs, manifests, an agent token).
struct Cluster {
    kubectl: PathBuf,
    /// Admin credentials (the test's own requests).
    admin: PathBuf,
    /// The manifests' ServiceAccount (the agents').
    agent: PathBuf,
    repo: PathBuf,
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cluster, or `None` (the test skips) when none runs and none is required.
fn cluster(test: &str) -> Option<&'static Cluster> {
    let c = CLUSTER.get_or_init(|| {
        let env = std::fs::read_to_string(repo().join(".e2e/env")).ok();
        let Some(env) = env else {
            assert!(
                std::env::var_os("VOLSNAP_REQUIRE_K8S").is_none(),
                "VOLSNAP_REQUIRE_K8S is set but no cluster runs (.e2e/env is missing): run `make cluster-up`"
            );
            return None;
        };
        let var = |k: &str| {
            env.lines()
                .find_map(|l| l.trim_start_matches("export ").strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{k} missing from .e2e/env"))
                .to_string()
        };
        let c = Cluster {
            kubectl: var("VOLSNAP_KUBECTL").into(),
            admin: var("KUBECONFIG").into(),
            agent: repo().join(".e2e/agent.kubeconfig"),
            repo: repo(),
        };
        c.setup();
        Some(c)
    });
    if c.is_none() {
        skip(test, "no test cluster (run `make cluster-up`, or `make test`)");
    }
    c.as_ref()
}

impl Cluster {
    /// `kubectl` as admin; panics with its output unless it succeeds.
    fn kubectl(&self, args: &[&str]) -> String {
        let out = self.try_kubectl(args, None);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl` as admin, with `stdin` piped in, whatever its outcome.
    fn try_kubectl(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut cmd = Command::new(&self.kubectl);
        cmd.env("KUBECONFIG", &self.admin).args(args);
        match stdin {
            None => run_bounded(&mut cmd, TIMEOUT),
            Some(text) => {
                let file = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(file.path(), text).unwrap();
                cmd.args(["-f", file.path().to_str().unwrap()]);
                run_bounded(&mut cmd, TIMEOUT)
            }
        }
    }

    /// Applies the CRDs and `manifests/` (namespace, ServiceAccount, RBAC,
    /// DaemonSet), and writes a kubeconfig with a token of the agent's
    /// ServiceAccount.
    fn setup(&self) {
        let k = self.repo.join("manifests");
        self.kubectl(&["apply", "--server-side", "--force-conflicts", "-k", k.to_str().unwrap()]);
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/volumesnapshots.volsnap.dev",
            "crd/volumerestores.volsnap.dev",
            "crd/volumesnapshotschedules.volsnap.dev",
        ]);
        let token = self.kubectl(&["create", "token", "volsnap", "-n", "volsnap-system", "--duration=2h"]);
        let ca = self.kubectl(&[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority-data}",
        ]);
        let server = self.kubectl(&["config", "view", "-o", "jsonpath={.clusters[0].cluster.server}"]);
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: e2e, cluster: {{server: {server}, certificate-authority-data: {ca}}}}}]\nusers: [{{name: agent, user: {{token: {}}}}}]\ncontexts: [{{name: agent, context: {{cluster: e2e, user: agent}}}}]\ncurrent-context: agent\n",
            token.trim()
        );
        std::fs::write(&self.agent, config).unwrap();
    }
}

/// How a test holds the cluster.
enum Hold {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// One test's namespace, agent node name and files; the namespace is
/// deleted on drop.
struct Kube {
    c: &'static Cluster,
    ns: String,
    node: String,
    env: Env,
    _hold: Hold,
}

impl Kube {
    fn new(test: &str) -> Option<Kube> {
        let c = cluster(test)?;
        let shared = CLUSTER_LOCK.read().unwrap_or_else(|e| e.into_inner());
        Some(Kube::with_hold(c, test, Hold::Shared(shared)))
    }

    /// For a test that disturbs the cluster: no other test runs meanwhile.
    fn exclusive(test: &str) -> Option<Kube> {
        let c = cluster(test)?;
        let all = CLUSTER_LOCK.write().unwrap_or_else(|e| e.into_inner());
        Some(Kube::with_hold(c, test, Hold::Exclusive(all)))
    }

    fn with_hold(c: &'static Cluster, test: &str, hold: Hold) -> Kube {
        let short: String =
            test.chars().filter(|ch| ch.is_ascii_alphanumeric()).take(20).collect::<String>().to_lowercase();
        let id = std::process::id() % 100_000;
        let ns = format!("t-{short}-{id}");
        c.kubectl(&["create", "namespace", &ns]);
        Kube { c, node: format!("node-{short}"), ns, env: Env::new(), _hold: hold }
    }

    /// Starts this test's agent (with the ServiceAccount's token).
    fn agent(&self) -> Daemon {
        self.agent_with(&[])
    }

    /// Starts this test's agent with extra environment variables.
    fn agent_with(&self, vars: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.envs(vars.iter().copied());
        cmd.env("KUBECONFIG", &self.c.agent).env("VOLSNAP_LOG", "info,kube=warn");
        let args: Vec<OsString> = [
            "controller",
            "--node-name",
            &self.node,
            "--state",
            self.env.state.to_str().unwrap(),
            "--allowed-root",
            self.env.data.to_str().unwrap(),
            "--resync-interval",
            "2",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        self.env.start_cmd(cmd, args)
    }

    fn apply(&self, yaml: &str) {
        let out = self.c.try_kubectl(&["apply", "-n", &self.ns], Some(yaml));
        assert!(out.status.success(), "kubectl apply failed: {}\n{yaml}", show(&out));
    }

    fn get(&self, what: &str) -> Option<Value> {
        let out = self.c.try_kubectl(&["get", what, "-n", &self.ns, "-o", "json"], None);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Waits until `what` exists and satisfies `pred`; returns it.
    fn wait(&self, what: &str, desc: &str, agent: &Daemon, pred: impl Fn(&Value) -> bool) -> Value {
        wait_for(&format!("{what} {desc}"), TIMEOUT, || match self.get(what) {
            Some(v) if pred(&v) => Ok(v),
            other => Err(format!("{other:?}\nagent log:\n{}", agent.log_text())),
        })
    }

    /// `kubectl wait --for=condition=... what` (what users of GitOps run).
    fn kubectl_wait(&self, condition: &str, what: &str) {
        self.c.kubectl(&["wait", &format!("--for=condition={condition}"), "--timeout=60s", "-n", &self.ns, what]);
    }

    /// A hostPath PersistentVolume on this test's node, bound to a claim.
    fn claim(&self, name: &str, dir: &Path) {
        self.claim_of("hostPath", name, dir);
    }

    /// A `kind` (hostPath, local) PersistentVolume on this test's node,
    /// bound to a claim.
    fn claim_of(&self, kind: &str, name: &str, dir: &Path) {
        let pv = format!("{}-{name}", self.ns);
        self.apply(&format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {pv}, labels: {{claim: {pv}}}}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: manual\n  {kind}: {{path: {}}}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n        - matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{}]}}]\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: manual\n  resources: {{requests: {{storage: 1Gi}}}}\n  selector: {{matchLabels: {{claim: {pv}}}}}\n",
            dir.display(),
            self.node
        ));
        wait_for("the claim to bind", TIMEOUT, || {
            let pvc = self.get(&format!("pvc/{name}")).unwrap_or_default();
            if pvc.pointer("/status/phase") == Some(&"Bound".into()) { Ok(()) } else { Err(format!("{pvc}")) }
        });
    }
}

impl Drop for Kube {
    fn drop(&mut self) {
        let _ = self.c.try_kubectl(&["delete", "namespace", &self.ns, "--wait=false"], None);
    }
}

fn snapshot_of_paths(name: &str, node: &str, dir: &Path, extra: &str) -> String {
    format!(
        "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  source:\n    paths: [{{name: app, path: {}}}]\n{extra}",
        dir.display()
    )
}

#[test]
fn kube_a_snapshot_gets_status_events_and_printer_columns() {
    let Some(k) = Kube::new("kube_status") else { return };
    let app = k.env.data_dir("app");
    write_numbered_files(&app, 20);
    let agent = k.agent();
    k.apply(&snapshot_of_paths("s1", &k.node, &app, ""));
    k.kubectl_wait("Ready", "vsnap/s1");
    let s = k.get("vsnap/s1").unwrap();
    assert_eq!(s.pointer("/status/phase"), Some(&"Completed".into()), "{s}");
    assert_eq!(s.pointer("/status/nodeName"), Some(&Value::from(k.node.clone())));
    let generation = s.pointer("/metadata/generation").cloned();
    let ready = condition(&s, "Ready").unwrap();
    assert_eq!(ready.get("observedGeneration").cloned(), generation, "conditions carry observedGeneration");
    let archive = PathBuf::from(s.pointer("/status/archive/path").unwrap().as_str().unwrap());
    assert!(tar_list(&archive).iter().any(|e| e.ends_with("volumes/0/f0")), "GNU tar reads the archive");
    let table = k.c.kubectl(&["get", "vsnap", "-n", &k.ns]);
    assert!(
        table.contains("PHASE") && table.lines().any(|l| l.starts_with("s1") && l.contains("Completed")),
        "{table}"
    );
    let events = k.c.kubectl(&["get", "events.events.k8s.io", "-n", &k.ns, "-o", "json"]);
    let events: Value = serde_json::from_str(&events).unwrap();
    let reasons: Vec<&str> = events["items"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(reasons.contains(&"Capturing") && reasons.contains(&"Captured"), "Events per transition: {reasons:?}");
    drop(agent);
}

#[test]
fn kube_the_server_enforces_the_schema_and_cel_rules() {
    let Some(k) = Kube::new("kube_cel") else { return };
    let two = "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: two}\nspec:\n  nodeName: somewhere\n  source: {container: a, volume: b}\n";
    let out = k.c.try_kubectl(&["apply", "-n", &k.ns], Some(two));
    assert!(!out.status.success() && show(&out).contains("exactly one of"), "two sources are refused: {}", show(&out));
    let unknown = "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: unk}\nspec:\n  bogus: 1\n  source: {container: a}\n";
    let out = k.c.try_kubectl(&["apply", "--validate=strict", "-n", &k.ns], Some(unknown));
    assert!(!out.status.success(), "unknown fields are refused: {}", show(&out));
    let app = k.env.data_dir("app");
    k.apply(&snapshot_of_paths("s", "elsewhere", &app, ""));
    let edited = snapshot_of_paths("s", "elsewhere", &app, "  compression: zstd\n");
    let out = k.c.try_kubectl(&["apply", "-n", &k.ns], Some(&edited));
    assert!(
        !out.status.success() && show(&out).contains("immutable"),
        "a snapshot's spec cannot change: {}",
        show(&out)
    );
}

#[test]
fn kube_deleting_a_delete_policy_snapshot_removes_its_archive_through_the_finalizer() {
    let Some(k) = Kube::new("kube_finalizer") else { return };
    let app = k.env.data_dir("app");
    write_numbered_files(&app, 3);
    let agent = k.agent();
    k.apply(&snapshot_of_paths("gone", &k.node, &app, "  deletionPolicy: Delete\n"));
    k.kubectl_wait("Ready", "vsnap/gone");
    let s = k.get("vsnap/gone").unwrap();
    assert_eq!(s.pointer("/metadata/finalizers/0"), Some(&"volsnap.dev/archive".into()), "{s}");
    let archive = PathBuf::from(s.pointer("/status/archive/path").unwrap().as_str().unwrap());
    assert!(archive.is_file());
    k.c.kubectl(&["delete", "vsnap/gone", "-n", &k.ns, "--timeout=60s"]);
    assert!(!archive.exists(), "the archive went with the object");
    assert!(k.get("vsnap/gone").is_none());
    drop(agent);
}

#[test]
fn kube_objects_of_another_node_are_left_alone() {
    let Some(k) = Kube::new("kube_othernode") else { return };
    let app = k.env.data_dir("app");
    write_numbered_files(&app, 3);
    let agent = k.agent();
    k.apply(&snapshot_of_paths("theirs", "some-other-node", &app, ""));
    k.apply(&snapshot_of_paths("ours", &k.node, &app, ""));
    k.kubectl_wait("Ready", "vsnap/ours");
    holds_for("the other node's snapshot to stay untouched", Duration::from_secs(3), || {
        let theirs = k.get("vsnap/theirs").unwrap();
        if theirs.get("status").is_none() { Ok(()) } else { Err(format!("{theirs}")) }
    });
    assert!(!k.env.archives().join(&k.ns).join("theirs.tar.gz").exists());
    drop(agent);
}

#[test]
fn kube_bad_sources_get_reasons_that_say_what_to_do() {
    let Some(k) = Kube::new("kube_badsrc") else { return };
    let agent = k.agent();
    let outside = Env::new();
    let doc = |name: &str, spec: &str| {
        format!("apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {{name: {name}}}\nspec:\n{spec}")
    };
    k.apply(&doc("nopvc", &format!("  nodeName: {}\n  source: {{persistentVolumeClaim: missing}}\n", k.node)));
    k.apply(&doc("nonode", &format!("  source:\n    paths: [{{path: {}}}]\n", k.env.data.display())));
    k.apply(&doc("docker", "  source: {container: app}\n"));
    k.apply(&doc(
        "outside",
        &format!("  nodeName: {}\n  source:\n    paths: [{{path: {}}}]\n", k.node, outside.data.display()),
    ));
    let pv = format!("{}-nfs", k.ns);
    k.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {pv}, labels: {{claim: {pv}}}}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: manual\n  nfs: {{server: nfs.example, path: /exports/a}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: shared}}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: manual\n  resources: {{requests: {{storage: 1Gi}}}}\n  selector: {{matchLabels: {{claim: {pv}}}}}\n"
    ));
    k.apply(&doc("nfs", "  source: {persistentVolumeClaim: shared}\n"));
    k.apply(&doc("relative", &format!("  nodeName: {}\n  source:\n    paths: [{{path: not/absolute}}]\n", k.node)));
    let expect = [
        ("relative", "InvalidSpec", "spec.source.paths[0].path"),
        ("nopvc", "SourceNotFound", "does not exist"),
        ("nonode", "NodeUnknown", "spec.nodeName"),
        ("docker", "UnsupportedSource", "files mode"),
        ("outside", "NoData", "allowed"),
        ("nfs", "UnsupportedSource", "nfs"),
    ];
    for (name, reason, words) in expect {
        let s =
            k.wait(&format!("vsnap/{name}"), &format!("fails with {reason}"), &agent, |s| cond(s, "Ready").1 == reason);
        let msg = cond(&s, "Ready").2;
        assert!(msg.contains(words), "{name}: the message says what to do ({words}): {msg}");
    }
    drop(agent);
}

#[test]
fn kube_a_pvc_backed_deployment_is_scaled_to_zero_and_back_around_an_in_place_restore() {
    let Some(k) = Kube::new("kube_scale") else { return };
    let db = k.env.data_dir("db");
    std::fs::write(db.join("table"), b"version 1").unwrap();
    k.claim("db", &db);
    deployment_on_claim(&k, "db");
    let agent = k.agent();
    k.apply("apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: db1}\nspec:\n  quiesce: Stop\n  source: {persistentVolumeClaim: db}\n");
    k.kubectl_wait("Ready", "vsnap/db1");
    assert_eq!(
        k.get("vsnap/db1").unwrap().pointer("/status/nodeName"),
        Some(&Value::from(k.node.clone())),
        "the node comes from the PV"
    );
    std::fs::write(db.join("table"), b"version 2").unwrap();
    let before = k.get("deploy/app").unwrap()["metadata"]["generation"].as_i64().unwrap();
    k.apply(
        "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeRestore\nmetadata: {name: undo}\nspec:\n  snapshotName: db1\n",
    );
    k.kubectl_wait("Succeeded", "vrestore/undo");
    assert_eq!(std::fs::read(db.join("table")).unwrap(), b"version 1", "the snapshot's data is live");
    let deploy = k.get("deploy/app").unwrap();
    assert_eq!(deploy["spec"]["replicas"], 2, "scaled back to the recorded count");
    assert!(deploy["metadata"]["generation"].as_i64().unwrap() >= before + 2, "scaled to 0 and back: {deploy}");
    let r = k.get("vrestore/undo").unwrap();
    assert!(r.pointer("/status/downtimeSeconds").and_then(Value::as_f64).is_some_and(|d| d > 0.0), "{r}");
    let pre = k.wait("vsnap/undo-pre-restore", "Completed", &agent, |s| phase(s) == "Completed");
    assert_eq!(pre.pointer("/metadata/ownerReferences/0/name"), Some(&"undo".into()), "owned by its restore");
    let pre_archive = PathBuf::from(pre.pointer("/status/archive/path").unwrap().as_str().unwrap());
    let out = extract(&pre_archive, &k.env.root);
    assert_eq!(std::fs::read(out.join("volumes/0/table")).unwrap(), b"version 2", "the replaced data was kept");
    wait_for("the deployment's pods again", TIMEOUT, || {
        let n = k.get("pods").unwrap()["items"].as_array().map_or(0, |a| a.len());
        if n == 2 { Ok(()) } else { Err(format!("{n} pods")) }
    });
    drop(agent);
}

/// A Deployment of 2 (Pending) pods on a claim of `dir`, and its pods.
fn deployment_on_claim(k: &Kube, claim: &str) {
    k.apply(&format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: app}}}}\n  template:\n    metadata: {{labels: {{app: app}}}}\n    spec:\n      containers: [{{name: c, image: busybox}}]\n      volumes: [{{name: d, persistentVolumeClaim: {{claimName: {claim}}}}}]\n"));
    wait_for("the deployment's 2 pods", TIMEOUT, || {
        let n = k.get("pods").unwrap()["items"].as_array().map_or(0, |a| a.len());
        if n == 2 { Ok(()) } else { Err(format!("{n} pods")) }
    });
}

#[test]
fn kube_a_restarted_agent_finishes_a_restore_it_was_killed_in() {
    let Some(k) = Kube::new("kube_crash") else { return };
    let db = k.env.data_dir("db");
    std::fs::write(db.join("table"), b"version 1").unwrap();
    k.claim("db", &db);
    deployment_on_claim(&k, "db");
    let agent = k.agent();
    k.apply("apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: s}\nspec:\n  quiesce: Stop\n  source: {persistentVolumeClaim: db}\n");
    k.kubectl_wait("Ready", "vsnap/s");
    drop(agent);
    std::fs::write(db.join("table"), b"version 2").unwrap();
    // Killed (SIGKILL) right after the swap is journaled: the data is the
    // snapshot's, the Deployment is at 0, the restore says InProgress.
    let mut doomed = k.agent_with(&[("VOLSNAP_FAULT", "restore:Swapped")]);
    k.apply("apiVersion: volsnap.dev/v1alpha1\nkind: VolumeRestore\nmetadata: {name: r}\nspec:\n  snapshotName: s\n");
    let status = doomed.wait_exit(TIMEOUT);
    assert!(!status.success(), "the fault point killed it: {}", doomed.log_text());
    assert_eq!(k.get("deploy/app").unwrap()["spec"]["replicas"], 0, "it died with the workload stopped");
    let agent = k.agent();
    k.kubectl_wait("Succeeded", "vrestore/r");
    let r = k.get("vrestore/r").unwrap();
    assert!(cond(&r, "Succeeded").2.contains("recovery sweep finished it"), "{r}");
    assert_eq!(std::fs::read(db.join("table")).unwrap(), b"version 1");
    assert_eq!(k.get("deploy/app").unwrap()["spec"]["replicas"], 2, "scaled back to the journaled count");
    drop(agent);
}

#[test]
fn kube_an_in_place_restore_onto_a_mounted_local_volume_is_refused_and_targetpath_works() {
    let Some(k) = Kube::new("kube_mount") else { return };
    if !is_root() {
        return skip("kube_mount", "needs root for a tmpfs mount");
    }
    let disk = k.env.data.join("disk");
    let Some(_mount) = Mount::tmpfs(&disk, "size=4m") else { return skip("kube_mount", "cannot mount tmpfs") };
    std::fs::write(disk.join("table"), b"version 1").unwrap();
    k.claim_of("local", "disk", &disk);
    let agent = k.agent();
    k.apply("apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: s}\nspec:\n  source: {persistentVolumeClaim: disk}\n");
    k.kubectl_wait("Ready", "vsnap/s");
    k.apply(
        "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeRestore\nmetadata: {name: inplace}\nspec:\n  snapshotName: s\n",
    );
    let r = k.wait("vrestore/inplace", "Failed", &agent, |r| phase(r) == "Failed");
    let (_, reason, msg) = cond(&r, "Succeeded");
    assert_eq!(reason, "TargetIsMountPoint", "{r}");
    assert!(msg.contains("spec.targetPath"), "the message says what to do instead: {msg}");
    assert_eq!(std::fs::read(disk.join("table")).unwrap(), b"version 1", "nothing was touched");
    let copy = k.env.data.join("copy");
    k.apply(&format!("apiVersion: volsnap.dev/v1alpha1\nkind: VolumeRestore\nmetadata: {{name: aside}}\nspec:\n  snapshotName: s\n  targetPath: {}\n", copy.display()));
    k.kubectl_wait("Succeeded", "vrestore/aside");
    assert_eq!(std::fs::read(copy.join("disk/table")).unwrap(), b"version 1");
    drop(agent);
}

#[test]
fn kube_sigterm_stops_the_agent_cleanly() {
    let Some(k) = Kube::new("kube_sigterm") else { return };
    let mut agent = k.agent();
    let app = k.env.data_dir("app");
    k.apply(&snapshot_of_paths("s", &k.node, &app, ""));
    k.kubectl_wait("Ready", "vsnap/s");
    agent.signal(libc::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}\n{}", agent.log_text());
}

#[test]
fn kube_a_workload_scaled_to_zero_by_someone_else_stays_at_zero() {
    let Some(k) = Kube::new("kube_zero") else { return };
    let db = k.env.data_dir("db");
    std::fs::write(db.join("table"), b"v1").unwrap();
    k.claim("db", &db);
    k.apply("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: idle}\nspec:\n  replicas: 0\n  selector: {matchLabels: {app: idle}}\n  template:\n    metadata: {labels: {app: idle}}\n    spec:\n      containers: [{name: c, image: busybox}]\n      volumes: [{name: d, persistentVolumeClaim: {claimName: db}}]\n");
    let agent = k.agent();
    k.apply("apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: s}\nspec:\n  quiesce: Stop\n  source: {persistentVolumeClaim: db}\n");
    k.kubectl_wait("Ready", "vsnap/s");
    k.apply("apiVersion: volsnap.dev/v1alpha1\nkind: VolumeRestore\nmetadata: {name: r}\nspec:\n  snapshotName: s\n  keepPreRestore: false\n");
    k.kubectl_wait("Succeeded", "vrestore/r");
    assert_eq!(k.get("deploy/idle").unwrap()["spec"]["replicas"], 0);
    drop(agent);
}

#[test]
fn kube_the_api_server_restarted_mid_run_loses_and_repeats_nothing() {
    let Some(k) = Kube::exclusive("kube_restart") else { return };
    let app = k.env.data_dir("app");
    write_numbered_files(&app, 5);
    let agent = k.agent();
    k.apply(&snapshot_of_paths("before", &k.node, &app, ""));
    k.kubectl_wait("Ready", "vsnap/before");
    let first = k.get("vsnap/before").unwrap();
    let archive = PathBuf::from(first.pointer("/status/archive/path").unwrap().as_str().unwrap());
    let written = std::fs::metadata(&archive).unwrap().modified().unwrap();
    let mut restart = Command::new("bash");
    restart.arg(k.c.repo.join("tests/k8s/restart-apiserver.sh")).arg("3");
    let out = run_bounded(&mut restart, Duration::from_secs(120));
    assert!(out.status.success(), "restarting the API server: {}", show(&out));
    // Created once it is back: the agent's watches resumed.
    k.apply(&snapshot_of_paths("after", &k.node, &app, ""));
    k.kubectl_wait("Ready", "vsnap/after");
    let again = k.get("vsnap/before").unwrap();
    assert_eq!(again.pointer("/status/completionTime"), first.pointer("/status/completionTime"), "not captured twice");
    assert_eq!(std::fs::metadata(&archive).unwrap().modified().unwrap(), written, "its archive was not rewritten");
    let mut agent = agent;
    assert!(agent.alive(), "the agent lived through the outage: {}", agent.log_text());
}

#[test]
fn kube_a_minutely_schedule_creates_owned_snapshots_and_deleting_it_keeps_the_archives() {
    let Some(k) = Kube::new("kube_schedule") else { return };
    let app = k.env.data_dir("app");
    write_numbered_files(&app, 3);
    let agent = k.agent();
    k.apply(&format!(
        "apiVersion: volsnap.dev/v1alpha1\nkind: VolumeSnapshotSchedule\nmetadata: {{name: every}}\nspec:\n  schedule: \"* * * * *\"\n  snapshotTemplate:\n    spec:\n      nodeName: {}\n      source:\n        paths: [{{name: app, path: {}}}]\n  retention: {{keepLast: 2}}\n",
        k.node,
        app.display()
    ));
    k.kubectl_wait("Ready", "vsched/every");
    let schedule = wait_for("the first slot's snapshot", Duration::from_secs(90), || match k.get("vsched/every") {
        Some(s) if s.pointer("/status/lastSnapshot").is_some() => Ok(s),
        other => Err(format!("{other:?}\n{}", agent.log_text())),
    });
    let name = schedule.pointer("/status/lastSnapshot").unwrap().as_str().unwrap().to_string();
    k.kubectl_wait("Ready", &format!("vsnap/{name}"));
    let snap = k.get(&format!("vsnap/{name}")).unwrap();
    assert_eq!(snap.pointer("/metadata/ownerReferences/0/kind"), Some(&"VolumeSnapshotSchedule".into()), "{snap}");
    assert_eq!(snap.pointer("/metadata/labels/volsnap.dev~1schedule"), Some(&"every".into()));
    let archive = PathBuf::from(snap.pointer("/status/archive/path").unwrap().as_str().unwrap());
    let table = k.c.kubectl(&["get", "vsched", "-n", &k.ns]);
    assert!(table.lines().any(|l| l.starts_with("every") && l.contains("* * * * *")), "{table}");
    // The schedule goes; garbage collection takes its snapshots; their
    // archives stay.
    k.c.kubectl(&["delete", "vsched/every", "-n", &k.ns, "--timeout=60s"]);
    k.wait("vsnap", "without the schedule's snapshots", &agent, |list| {
        list["items"].as_array().is_some_and(|items| items.is_empty())
    });
    assert!(archive.is_file(), "deleting a schedule never deletes its archives");
    drop(agent);
}
