//! The deployment manifests parse, pass their platforms' own validators and
//! have the structure production needs: `deploy.yaml` (Akash SDL 2.0,
//! Akash's `validateSDL` through `.ci/validate-sdl.mjs`), `docker/k8s.yaml`
//! (a Deployment) and `docker/k8s-statefulset.yaml` (a StatefulSet), both
//! checked by `kubernetes-validate --strict` and held to the "restricted"
//! Pod Security Standard. The container test runs the image the way the
//! k8s pod runs it, probes included.
//!
//! The validators are installed by `.ci/run`; without them (outside CI,
//! where `CI` is unset) these tests print why and pass.

use crate::util::TestDir;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A YAML file of the repository as JSON values, one per document.
fn documents(path: &str) -> Vec<Value> {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&full).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

/// The one document of `path`.
fn document(path: &str) -> Value {
    let mut docs = documents(path);
    assert_eq!(docs.len(), 1, "{path}: expected one YAML document");
    docs.remove(0)
}

/// The moltd container of the Deployment in `docker/k8s.yaml`.
pub fn k8s_container() -> Value {
    let deployment = document("docker/k8s.yaml");
    deployment["spec"]["template"]["spec"]["containers"][0].clone()
}

/// The pod's user and group in `docker/k8s.yaml` (`runAsUser:runAsGroup`).
pub fn k8s_user() -> String {
    let deployment = document("docker/k8s.yaml");
    let pod = &deployment["spec"]["template"]["spec"]["securityContext"];
    format!("{}:{}", pod["runAsUser"], pod["runAsGroup"])
}

/// The paths the k8s container mounts volumes on, with whether the volume
/// lives in memory (`emptyDir.medium: Memory`).
pub fn k8s_mounts() -> Vec<(String, bool)> {
    let deployment = document("docker/k8s.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    mounts(pod, &pod["containers"][0])
}

fn mounts(pod: &Value, container: &Value) -> Vec<(String, bool)> {
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
    mounts
        .iter()
        .map(|mount| {
            let volume = volumes.iter().find(|v| v["name"] == mount["name"]);
            let memory = volume.is_some_and(|v| v["emptyDir"]["medium"] == "Memory");
            (mount["mountPath"].as_str().unwrap().to_string(), memory)
        })
        .collect()
}

/// The container port named `name`.
fn port_named(container: &Value, name: &Value) -> u64 {
    let ports = container["ports"].as_array().expect("ports");
    let port = ports.iter().find(|p| &p["name"] == name);
    port.unwrap_or_else(|| panic!("no port named {name}"))["containerPort"]
        .as_u64()
        .unwrap()
}

/// The liveness probe's path and port, and the readiness probe's.
pub fn k8s_probes() -> [(String, u64); 2] {
    let container = k8s_container();
    ["livenessProbe", "readinessProbe"].map(|probe| {
        let get = &container[probe]["httpGet"];
        let path = get["path"].as_str().expect("an httpGet probe").to_string();
        (path, port_named(&container, &get["port"]))
    })
}

/// `KEY=VALUE` strings (Akash) or `{name, value}` objects (Kubernetes), as
/// pairs; a `valueFrom` entry has no value.
fn env_pairs(env: &Value) -> Vec<(String, Option<String>)> {
    env.as_array()
        .expect("env is a list")
        .iter()
        .map(|entry| match entry {
            Value::String(pair) => {
                let (k, v) = pair.split_once('=').expect("KEY=VALUE");
                (k.to_string(), Some(v.to_string()))
            }
            _ => (
                entry["name"].as_str().unwrap().to_string(),
                entry["value"].as_str().map(String::from),
            ),
        })
        .collect()
}

fn value<'a>(pairs: &'a [(String, Option<String>)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_deref())
}

/// What moltd follows: `MOLTD_REPO`, or the original `GH_USER` + `GH_REPO`.
fn names_a_repository(pairs: &[(String, Option<String>)]) -> bool {
    value(pairs, "MOLTD_REPO").is_some_and(|r| r.contains('/'))
        || (value(pairs, "GH_USER").is_some() && value(pairs, "GH_REPO").is_some())
}

/// A file of the repository.
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Whether a validator is there; if not, the test is skipped with its
/// reason, except in CI, where `.ci/run` must have installed it.
fn installed(test: &str, what: &str, present: bool) -> bool {
    if !present && std::env::var_os("CI").is_some() {
        panic!("{what} is not installed, and .ci/run installs it");
    }
    if !present {
        eprintln!("{test}: skipped: {what} is not installed (.ci/run installs it)");
    }
    present
}

/// `program ARGS` from the repository's root.
fn run(program: &str, args: &[&Path]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// `validator FILES` must accept the repository's `files`, and refuse a
/// copy of the first one with `from` replaced by `to` (proof that it
/// checks, rather than exiting 0 on anything).
fn validates(validator: impl Fn(&[&Path]) -> Output, files: &[&str], from: &str, to: &str) {
    let paths: Vec<PathBuf> = files.iter().map(|f| repo(f)).collect();
    let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let output = validator(&paths);
    let text = |o: &Output| {
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    };
    assert!(output.status.success(), "{files:?}: {}", text(&output));
    let good = std::fs::read_to_string(paths[0]).unwrap();
    assert!(good.contains(from), "{}: no {from:?} to break", files[0]);
    let dir = TestDir::new("manifest_broken");
    let broken = dir.write("broken.yaml", &good.replacen(from, to, 1));
    let output = validator(&[&broken]);
    assert!(!output.status.success(), "{to:?} was accepted");
}

#[test]
fn k8s_manifests_pass_kubernetes_validate_strict() {
    let present = Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let test = "k8s_manifests_pass_kubernetes_validate_strict";
    if !installed(test, "kubernetes-validate (pip)", present) {
        return;
    }
    let validator = |files: &[&Path]| {
        let mut args: Vec<&Path> = vec![Path::new("--strict"), Path::new("--quiet")];
        args.extend(files);
        run("kubernetes-validate", &args)
    };
    let files = ["docker/k8s.yaml", "docker/k8s-statefulset.yaml"];
    // --strict: a misspelt field is an error, not ignored.
    validates(validator, &files, "timeoutSeconds:", "timeoutSecond:");
}

#[test]
fn akash_sdl_passes_akash_validate_sdl() {
    let sdk = repo(".ci/node_modules/@akashnetwork/chain-sdk");
    let node = Command::new("node").arg("--version").output();
    let present = sdk.is_dir() && node.is_ok_and(|o| o.status.success());
    let what = "node with @akashnetwork/chain-sdk in .ci/node_modules (npm)";
    if !installed("akash_sdl_passes_akash_validate_sdl", what, present) {
        return;
    }
    let validator = |files: &[&Path]| {
        let mut args = vec![Path::new(".ci/validate-sdl.mjs")];
        args.extend(files);
        run("node", &args)
    };
    validates(validator, &["deploy.yaml"], "units: 0.5", "units: -1");
}

#[test]
fn akash_sdl_has_its_sections_and_the_env_configuration() {
    let sdl = document("deploy.yaml");
    assert_eq!(sdl["version"], "2.0");
    let services = sdl["services"].as_object().expect("services");
    let compute = sdl["profiles"]["compute"].as_object().expect("compute");
    let placement = sdl["profiles"]["placement"].as_object().expect("placement");
    let deployment = sdl["deployment"].as_object().expect("deployment");
    assert!(!services.is_empty());
    for (name, service) in services {
        assert!(service["image"].as_str().is_some(), "{name}: no image");
        let env = env_pairs(&service["env"]);
        assert!(names_a_repository(&env), "{name}: no repository");
        for key in ["SLEEP", "SVWAIT"] {
            let v = value(&env, key).unwrap_or_else(|| panic!("{name}: no {key}"));
            v.parse::<u64>().expect("seconds");
        }
        // A token never goes into the file, only a commented example.
        assert!(value(&env, "GITHUB_TOKEN").is_none());
        // Every service is deployed with a compute profile and a placement.
        let targets = deployment[name].as_object().expect("deployment entry");
        for (group, target) in targets {
            assert!(placement.contains_key(group), "unknown placement {group}");
            let profile = target["profile"].as_str().unwrap();
            assert!(compute.contains_key(profile), "unknown profile {profile}");
            assert!(target["count"].as_u64().unwrap() >= 1);
            let price = &placement[group]["pricing"][profile];
            assert!(price["denom"].is_string() && price["amount"].is_number());
        }
    }
    for (name, profile) in compute {
        let resources = &profile["resources"];
        for key in ["cpu", "memory", "storage"] {
            assert!(!resources[key].is_null(), "{name}: no {key}");
        }
    }
    let text = std::fs::read_to_string(repo("deploy.yaml")).unwrap();
    assert!(text.contains("# - \"GITHUB_TOKEN="));
    assert!(text.contains("# - \"MOLTD_SKIP="));
    // Whoever fills in env must know who reads it.
    assert!(text.contains("the provider can read it"));
}

#[test]
fn k8s_deployment_has_replicas_env_probes_and_a_grace_period_past_svwait() {
    let deployment = document("docker/k8s.yaml");
    assert_eq!(deployment["apiVersion"], "apps/v1");
    assert_eq!(deployment["kind"], "Deployment");
    let spec = &deployment["spec"];
    assert!(spec["replicas"].as_u64().unwrap() > 1);
    let labels = &spec["template"]["metadata"]["labels"];
    for (k, v) in spec["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "selector does not match the pods");
    }
    let container = k8s_container();
    assert!(container["image"].is_string());
    let env = env_pairs(&container["env"]);
    assert!(names_a_repository(&env));
    let svwait: u64 = value(&env, "SVWAIT").unwrap().parse().unwrap();
    let grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(grace > svwait, "grace period {grace} <= SVWAIT {svwait}");
    let token = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "GITHUB_TOKEN")
        .expect("GITHUB_TOKEN from a secret");
    assert_eq!(token["valueFrom"]["secretKeyRef"]["optional"], true);
    // The kubelet probes the pod's IP: moltd's listener must be on it, on
    // the port the liveness probe names; both probes say how long they wait.
    let [(live, live_port), (_, ready_port)] = k8s_probes();
    assert_eq!(live, "/healthz");
    let listen = value(&env, "MOLTD_LISTEN").expect("MOLTD_LISTEN");
    assert_eq!(listen, format!("0.0.0.0:{live_port}"));
    assert_eq!(ready_port, 8080, "readiness asks the app");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert!(container[probe]["timeoutSeconds"].as_u64().is_some());
    }
}

/// The pod templates of the workloads (Deployment, StatefulSet) in `path`.
fn pod_templates(path: &str) -> Vec<Value> {
    documents(path)
        .into_iter()
        .filter(|doc| doc["kind"] == "Deployment" || doc["kind"] == "StatefulSet")
        .collect()
}

#[test]
fn k8s_pods_are_restricted_read_only_with_run_app_and_tmp_volumes() {
    for path in ["docker/k8s.yaml", "docker/k8s-statefulset.yaml"] {
        let workloads = pod_templates(path);
        assert_eq!(workloads.len(), 1, "{path}: one workload");
        let workload = &workloads[0];
        let pod = &workload["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false, "{path}");
        let security = &pod["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{path}");
        for id in ["runAsUser", "runAsGroup", "fsGroup"] {
            assert!(security[id].as_u64().unwrap() > 0, "{path}: {id}");
        }
        assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
        for container in pod["containers"].as_array().unwrap() {
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"], true, "{path}");
            assert_eq!(security["allowPrivilegeEscalation"], false, "{path}");
            assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
            for (kind, resource) in [("requests", "cpu"), ("requests", "memory")]
                .into_iter()
                .chain([("limits", "cpu"), ("limits", "memory")])
            {
                let amount = &container["resources"][kind][resource];
                assert!(!amount.is_null(), "{path}: no {kind}.{resource}");
            }
            // What moltd and the app write, with a read-only root.
            let mounted = mounts(pod, container);
            assert!(mounted.contains(&("/run".into(), true)), "{path}: /run");
            assert!(mounted.iter().any(|(p, _)| p == "/app"), "{path}: /app");
            assert!(mounted.iter().any(|(p, _)| p == "/tmp"), "{path}: /tmp");
        }
        // A claim for /app under a Deployment deadlocks a rolling update
        // (the new pod finds the old one's lock): it needs Recreate.
        let claims = (pod["volumes"].as_array().unwrap().iter())
            .any(|v| v["persistentVolumeClaim"].is_object());
        if workload["kind"] == "Deployment" && claims {
            assert_eq!(workload["spec"]["strategy"]["type"], "Recreate", "{path}");
        }
    }
}

#[test]
fn k8s_statefulset_runs_the_deployments_container_with_a_claim_per_pod() {
    let docs = documents("docker/k8s-statefulset.yaml");
    let set = &pod_templates("docker/k8s-statefulset.yaml")[0];
    assert_eq!(set["kind"], "StatefulSet");
    let pod = &set["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0],
        k8s_container(),
        "the containers differ"
    );
    let claims = set["spec"]["volumeClaimTemplates"].as_array().unwrap();
    assert!(claims.iter().any(|c| c["metadata"]["name"] == "app"));
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(!volumes.iter().any(|v| v["name"] == "app"), "a shared /app");
    // Its governing Service is in the file, headless.
    let service = docs.iter().find(|d| d["kind"] == "Service").unwrap();
    assert_eq!(service["metadata"]["name"], set["spec"]["serviceName"]);
    assert_eq!(service["spec"]["clusterIP"], "None");
}
