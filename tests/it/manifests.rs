//! The deployment manifests parse and have the structure their platforms
//! need: `deploy.yaml` (Akash SDL 2.0) and `docker/k8s.yaml` (a Kubernetes
//! Deployment). The container test runs the k8s probes in the real image.

use serde_json::Value;

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
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy.yaml"));
    assert!(text.unwrap().contains("# - \"GITHUB_TOKEN="));
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
    for probe in ["readinessProbe", "livenessProbe"] {
        assert!(container[probe].is_object(), "no {probe}");
    }
}
