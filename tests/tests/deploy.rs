//! The deployment artefacts under `deploy/`: Kubernetes manifests (schemas of several releases
//! offline with `kubernetes-validate`, CRDs, RBAC and cross-references structurally, the
//! DaemonSet's least-privilege contract), the systemd unit
//! (`systemd-analyze verify` and `security`, and its capability set against the real classifier),
//! the Prometheus rules (`promtool check rules` and `promtool test rules`), the PromQL of the
//! dashboard and rollout templates, the metric names they use against what the daemon exports,
//! the configuration files against the real parser, and the Dockerfile against the repository.
//!
//! External tools (kubernetes-validate, PyYAML, systemd-analyze, promtool, setpriv) are installed
//! by `cargo xtask setup`. A missing tool skips its test with a message, except under `CI=true`,
//! where it fails (like the privileged tests).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{Arc, mpsc},
    time::Duration,
};

use clap::Parser as _;
use mirror::config::Config;
use mirror_tests::{mirror_bin, privileged, unique_name};

// ------------------------------------------------------------------------------------------
// Helpers

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf()
}

fn deploy(relative: &str) -> PathBuf {
    repo().join("deploy").join(relative)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// True when `program args...` runs successfully. Otherwise the test fails under CI (`CI=true`)
/// and skips with a message elsewhere: the same policy as `mirror_tests::privileged`.
fn tool(test: &str, program: &str, args: &[&str], what: &str) -> bool {
    let works = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|output| output.status.success());
    if works {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs {what} (`{program}` missing or not working); under CI it fails instead of \
         skipping; `cargo xtask setup` installs it"
    );
    eprintln!("skipping {test}: needs {what} (`{program}`); `cargo xtask setup` installs it");
    false
}

fn has_pyyaml(test: &str) -> bool {
    tool(
        test,
        "python3",
        &["-c", "import yaml"],
        "Python 3 with PyYAML",
    )
}

/// A directory under the system temp dir, removed on drop (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(unique_name("mirror-deploy-"));
        fs::create_dir_all(&path).expect("creating a temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Flattens every document of a YAML (or, for `.json`, JSON) file with a real parser (PyYAML /
/// Python's json) into `path -> scalar` maps, one per document: `spec.template.spec.hostNetwork`
/// -> `true`, `spec.containers[0].args[1]` -> `--config`. Strings are kept as written (newlines
/// escaped by the script and restored here); other scalars are JSON (`true`, `9477`, `null`).
const FLATTEN: &str = r#"
import json, sys
path = sys.argv[1]
with open(path) as f:
    text = f.read()
if path.endswith(".json"):
    docs = [json.loads(text)]
else:
    import yaml
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
def esc(s):
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
def walk(doc, prefix, v):
    if isinstance(v, dict):
        if not v:
            print(f"{doc}\t{prefix}\t{{}}")
        for k, x in v.items():
            walk(doc, f"{prefix}.{k}" if prefix else str(k), x)
    elif isinstance(v, list):
        if not v:
            print(f"{doc}\t{prefix}\t[]")
        for i, x in enumerate(v):
            walk(doc, f"{prefix}[{i}]", x)
    else:
        s = v if isinstance(v, str) else json.dumps(v)
        print(f"{doc}\t{prefix}\t{esc(s)}")
for i, d in enumerate(docs):
    walk(i, "", d)
"#;

type Doc = BTreeMap<String, String>;

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn flatten(path: &Path) -> Vec<Doc> {
    let output = Command::new("python3")
        .args(["-c", FLATTEN])
        .arg(path)
        .output()
        .expect("running python3");
    assert!(
        output.status.success(),
        "{} does not parse: {}",
        path.display(),
        text(&output)
    );
    let mut docs: Vec<Doc> = Vec::new();
    for line in String::from_utf8(output.stdout).expect("UTF-8").lines() {
        let mut fields = line.splitn(3, '\t');
        let (Some(doc), Some(key), Some(value)) = (fields.next(), fields.next(), fields.next())
        else {
            panic!("unexpected flattener line {line:?}");
        };
        let doc: usize = doc.parse().expect("document index");
        if docs.len() <= doc {
            docs.resize_with(doc + 1, Doc::new);
        }
        docs[doc].insert(key.to_owned(), unescape(value));
    }
    docs
}

fn single(path: &Path) -> Doc {
    let mut docs = flatten(path);
    assert_eq!(docs.len(), 1, "{}: expected one document", path.display());
    docs.remove(0)
}

/// The value at `key`, or a failure naming the file and key.
fn get<'a>(doc: &'a Doc, key: &str) -> &'a str {
    doc.get(key)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("missing `{key}` in {:?}", doc.get("metadata.name")))
}

/// Values of a list of scalars (`key[0]`, `key[1]`, ...).
fn list(doc: &Doc, key: &str) -> Vec<String> {
    (0..)
        .map_while(|index| doc.get(&format!("{key}[{index}]")).cloned())
        .collect()
}

/// Number of elements of a list of mappings or scalars at `key`.
fn count(doc: &Doc, key: &str) -> usize {
    let prefix = format!("{key}[");
    doc.keys()
        .filter_map(|path| path.strip_prefix(&prefix))
        .filter_map(|rest| rest.split(']').next()?.parse::<usize>().ok())
        .map(|index| index + 1)
        .max()
        .unwrap_or(0)
}

/// Extracts the `mirror.toml: |` block scalar of the ConfigMap without a YAML library (the
/// structural test checks that PyYAML reads the same text).
fn configmap_toml() -> String {
    let manifest = read(&deploy("kubernetes/configmap.yaml"));
    let mut lines = manifest.lines();
    lines
        .by_ref()
        .find(|line| line.trim_end() == "  mirror.toml: |")
        .expect("configmap.yaml has a `mirror.toml: |` block under data");
    let block: Vec<&str> = lines
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .collect();
    let mut toml = String::new();
    for line in block {
        toml.push_str(line.strip_prefix("    ").unwrap_or(""));
        toml.push('\n');
    }
    // A YAML `|` block keeps one final newline.
    format!("{}\n", toml.trim_end_matches('\n'))
}

/// Every key of the effective configuration (`Config::to_toml_string`, all defaults spelled out)
/// appears as `key =` in `file`: the shipped files show every setting rather than relying on
/// defaults a reader cannot see.
fn assert_spells_out_every_key(config: &Config, file_text: &str, file: &str) {
    let effective = config.to_toml_string();
    let mut keys = BTreeSet::new();
    let mut subtable = false;
    for line in effective.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_matches(|c| c == '[' || c == ']');
            subtable = header.contains('.');
            if let Some((_, key)) = header.split_once('.') {
                keys.insert(key.to_owned());
            }
        } else if let Some((key, _)) = line.split_once(" = ")
            && !subtable
        {
            keys.insert(key.to_owned());
        }
    }
    assert!(keys.len() > 20, "too few keys found in:\n{effective}");
    let mut written: BTreeSet<&str> = file_text
        .lines()
        .filter_map(|line| line.trim().split_once(" = "))
        .map(|(key, _)| key)
        .collect();
    // Sub-tables are written as headers (`[verdict.drift.layout]`), like the effective
    // configuration writes them.
    for line in file_text.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_matches(|c| c == '[' || c == ']');
            if let Some((_, key)) = header.split_once('.') {
                written.insert(key);
            }
        }
    }
    // `shadow = "URL"` is the one-shadow spelling of `[[target.shadows]]`, which is how the
    // effective configuration prints it.
    if written.contains("shadow") {
        written.insert("shadows");
    }
    // A subtable written as a `[section.key]` header counts as written, like `key = {...}`.
    for line in file_text.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[')
            && let Some((_, key)) = header
                .trim_matches(|c| c == '[' || c == ']')
                .split_once('.')
        {
            written.insert(key);
        }
    }
    let missing: Vec<&String> = keys
        .iter()
        .filter(|key| !written.contains(key.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{file} leaves out {missing:?}; show every key"
    );
}

// ------------------------------------------------------------------------------------------
// Configuration files

#[test]
fn configmap_config_is_accepted_by_the_config_parser() {
    let toml = configmap_toml();
    let config = Config::from_toml(&toml, "deploy/kubernetes/configmap.yaml:mirror.toml")
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        config.metrics.listen.port(),
        9477,
        "probes and Service use 9477"
    );
    assert_eq!(config.capture.interfaces, ["veth*"]);
    assert!(!config.targets.is_empty());
    assert_spells_out_every_key(&config, &toml, "the ConfigMap's mirror.toml");
    // The parser really rejects mistakes (unknown keys): the check above is not vacuous.
    let typo = toml.replace("sample_percent", "sample_precent");
    assert!(Config::from_toml(&typo, "typo").is_err());
}

#[test]
fn systemd_example_config_is_accepted_by_the_config_parser() {
    let path = deploy("systemd/mirror.toml");
    let config = Config::load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.metrics.listen.port(), 9477);
    assert_spells_out_every_key(&config, &read(&path), "deploy/systemd/mirror.toml");
}

// ------------------------------------------------------------------------------------------
// Kubernetes

/// Manifests of built-in kinds (validated against the Kubernetes schemas) and the others.
fn kubernetes_manifests() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut builtin = Vec::new();
    let mut custom = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(deploy("kubernetes"))
        .expect("deploy/kubernetes")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    entries.sort();
    for path in entries {
        let manifest = read(&path);
        let api_version = manifest
            .lines()
            .find_map(|line| line.strip_prefix("apiVersion: "))
            .unwrap_or_else(|| panic!("{} has no apiVersion", path.display()));
        // Core, apps and RBAC kinds have schemas; CRDs (ServiceMonitor) and the Kustomization
        // do not.
        if api_version == "v1"
            || api_version.starts_with("apps/")
            || api_version.starts_with("rbac.authorization.k8s.io/")
        {
            builtin.push(path);
        } else {
            custom.push(path);
        }
    }
    (builtin, custom)
}

/// Kubernetes releases the manifests are validated against (schemas kubernetes-validate ships).
const KUBERNETES_VERSIONS: [&str; 4] = ["1.27.0", "1.30.0", "1.33.0", "1.36.0"];

#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    let test = "kubernetes_manifests_validate_against_the_schemas";
    if !tool(
        test,
        "kubernetes-validate",
        &["--version"],
        "kubernetes-validate (PyPI)",
    ) {
        return;
    }
    let (builtin, custom) = kubernetes_manifests();
    let names = |paths: &[PathBuf]| -> BTreeSet<String> {
        paths
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names(&builtin),
        [
            "configmap.yaml",
            "daemonset.yaml",
            "namespace.yaml",
            "rbac.yaml",
            "service.yaml",
            "serviceaccount.yaml"
        ]
        .map(String::from)
        .into(),
    );
    // CRDs and the Kustomization are not in the schemas kubernetes-validate ships (it only
    // warns "Couldn't find schema"): crds_and_kustomization_are_structurally_valid checks them.
    assert_eq!(
        names(&custom),
        ["kustomization.yaml", "servicemonitor.yaml"]
            .map(String::from)
            .into()
    );
    // The oldest release still under some vendor's support, two in between, and a recent one:
    // a field removed or added across them (a beta API, a new securityContext field) shows.
    for version in KUBERNETES_VERSIONS {
        let report = kubernetes_validate(version, &builtin);
        let minor = version.trim_end_matches(".0");
        for path in &builtin {
            let file = path.display().to_string();
            assert!(
                report.lines().any(|line| line.contains(&file)
                    && line.contains(" passed ")
                    && line.ends_with(&format!("against version {minor}"))),
                "{file} was not validated against {version}:\n{report}"
            );
        }
    }

    // Negative control: strict validation does reject a misspelt field.
    let dir = TempDir::new();
    let broken = dir.0.join("daemonset.yaml");
    let daemonset = read(&deploy("kubernetes/daemonset.yaml"));
    fs::write(
        &broken,
        daemonset.replace("hostNetwork: true", "hostNetwerk: true"),
    )
    .unwrap();
    let output = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .arg(&broken)
        .output()
        .expect("running kubernetes-validate");
    assert!(
        !output.status.success(),
        "a misspelt field passed:\n{}",
        text(&output)
    );
}

#[test]
fn crds_and_kustomization_are_structurally_valid() {
    if !has_pyyaml("crds_and_kustomization_are_structurally_valid") {
        return;
    }
    // Kustomization: lists exactly the other manifests of the directory, sets the namespace.
    let kustomization = single(&deploy("kubernetes/kustomization.yaml"));
    assert_eq!(
        get(&kustomization, "apiVersion"),
        "kustomize.config.k8s.io/v1beta1"
    );
    assert_eq!(get(&kustomization, "kind"), "Kustomization");
    assert_eq!(get(&kustomization, "namespace"), "mirror-system");
    let listed: BTreeSet<String> = list(&kustomization, "resources").into_iter().collect();
    let (builtin, custom) = kubernetes_manifests();
    let present: BTreeSet<String> = builtin
        .iter()
        .chain(&custom)
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization.yaml resources vs files");

    // Every namespaced object is in mirror-system; cluster-scoped ones have no namespace.
    for path in builtin.iter().chain(&custom) {
        for doc in flatten(path) {
            match get(&doc, "kind") {
                "Kustomization" => {}
                "Namespace" => assert_eq!(get(&doc, "metadata.name"), "mirror-system"),
                "ClusterRole" | "ClusterRoleBinding" => {
                    assert!(
                        !doc.contains_key("metadata.namespace"),
                        "{}",
                        path.display()
                    );
                }
                _ => assert_eq!(
                    get(&doc, "metadata.namespace"),
                    "mirror-system",
                    "{}",
                    path.display()
                ),
            }
        }
    }

    // RBAC: the DaemonSet's ServiceAccount may read pods (the pod watch), nothing else.
    let rbac = flatten(&deploy("kubernetes/rbac.yaml"));
    let of_kind = |kind: &str| {
        rbac.iter()
            .find(|doc| doc.get("kind").map(String::as_str) == Some(kind))
            .unwrap_or_else(|| panic!("rbac.yaml has no {kind}"))
    };
    let (role, binding) = (of_kind("ClusterRole"), of_kind("ClusterRoleBinding"));
    assert_eq!(rbac.len(), 2);
    assert_eq!(count(role, "rules"), 1);
    assert_eq!(list(role, "rules[0].apiGroups"), [""]);
    assert_eq!(list(role, "rules[0].resources"), ["pods"]);
    assert_eq!(list(role, "rules[0].verbs"), ["get", "list", "watch"]);
    assert_eq!(get(binding, "roleRef.kind"), "ClusterRole");
    assert_eq!(get(binding, "roleRef.name"), get(role, "metadata.name"));
    let account = single(&deploy("kubernetes/serviceaccount.yaml"));
    let pod_spec = single(&deploy("kubernetes/daemonset.yaml"));
    assert_eq!(count(binding, "subjects"), 1);
    assert_eq!(get(binding, "subjects[0].kind"), "ServiceAccount");
    assert_eq!(
        get(binding, "subjects[0].name"),
        get(&account, "metadata.name")
    );
    assert_eq!(
        get(&pod_spec, "spec.template.spec.serviceAccountName"),
        get(&account, "metadata.name")
    );
    assert_eq!(get(binding, "subjects[0].namespace"), "mirror-system");

    // The ConfigMap as PyYAML reads it is the text the parser test used.
    let configmap = single(&deploy("kubernetes/configmap.yaml"));
    assert_eq!(get(&configmap, "data.mirror.toml"), configmap_toml());

    // ServiceMonitor -> Service -> DaemonSet pods.
    let monitor = single(&deploy("kubernetes/servicemonitor.yaml"));
    let service = single(&deploy("kubernetes/service.yaml"));
    let daemonset = single(&deploy("kubernetes/daemonset.yaml"));
    assert_eq!(get(&monitor, "apiVersion"), "monitoring.coreos.com/v1");
    assert_eq!(get(&monitor, "kind"), "ServiceMonitor");
    assert!(!get(&monitor, "metadata.name").is_empty());
    assert!(count(&monitor, "spec.endpoints") >= 1);
    for (key, value) in &monitor {
        if let Some(label) = key.strip_prefix("spec.selector.matchLabels.") {
            assert_eq!(
                service.get(&format!("metadata.labels.{label}")),
                Some(value),
                "ServiceMonitor selects label {label}={value}, the Service lacks it"
            );
        }
    }
    assert_eq!(
        list(&monitor, "spec.namespaceSelector.matchNames"),
        ["mirror-system"]
    );
    assert_eq!(get(&monitor, "spec.endpoints[0].port"), "metrics");
    assert_eq!(get(&monitor, "spec.endpoints[0].path"), "/metrics");
    // The scrape job is named after the Service (no jobLabel), as MirrorDown expects.
    assert!(!monitor.contains_key("spec.jobLabel"));
    let job = get(&service, "metadata.name");
    let rules = read(&deploy("prometheus/mirror-alerts.yaml"));
    assert!(
        rules.contains(&format!("up{{job=\"{job}\"}} == 0"))
            && rules.contains(&format!("absent(up{{job=\"{job}\"}})")),
        "MirrorDown must match the job the ServiceMonitor creates: {job}"
    );
    assert_eq!(get(&service, "spec.ports[0].name"), "metrics");
    assert_eq!(get(&service, "spec.ports[0].port"), "9477");
    for (key, value) in &service {
        if let Some(label) = key.strip_prefix("spec.selector.") {
            assert_eq!(
                daemonset.get(&format!("spec.template.metadata.labels.{label}")),
                Some(value),
                "the Service selects {label}={value}, the DaemonSet's pods lack it"
            );
        }
    }
}

#[test]
fn daemonset_follows_the_deployment_contract() {
    if !has_pyyaml("daemonset_follows_the_deployment_contract") {
        return;
    }
    let ds = single(&deploy("kubernetes/daemonset.yaml"));
    let pod = "spec.template.spec";
    let c = format!("{pod}.containers[0]");
    assert_eq!(get(&ds, &format!("{pod}.hostNetwork")), "true");
    assert_eq!(
        get(&ds, &format!("{pod}.dnsPolicy")),
        "ClusterFirstWithHostNet",
        "shadow URLs name cluster services"
    );
    assert_eq!(
        get(&ds, &format!("{pod}.tolerations[0].operator")),
        "Exists"
    );
    assert!(!ds.contains_key(&format!("{pod}.tolerations[0].key")));
    assert_eq!(
        get(&ds, &format!("{pod}.nodeSelector.kubernetes.io/os")),
        "linux"
    );
    // The pod watch: an API token, and the node's name from the downward API.
    assert_eq!(
        get(&ds, &format!("{pod}.automountServiceAccountToken")),
        "true"
    );
    let env = count(&ds, &format!("{c}.env"));
    let node_name = (0..env)
        .find(|i| get(&ds, &format!("{c}.env[{i}].name")) == "NODE_NAME")
        .expect("env NODE_NAME");
    assert_eq!(
        get(
            &ds,
            &format!("{c}.env[{node_name}].valueFrom.fieldRef.fieldPath")
        ),
        "spec.nodeName"
    );
    // Least privilege: not privileged, every capability dropped but the set the systemd unit
    // grants, which unit_capabilities_are_necessary_and_sufficient proves on the classifier.
    let security = format!("{c}.securityContext");
    assert_eq!(get(&ds, &format!("{security}.privileged")), "false");
    assert_eq!(
        get(&ds, &format!("{security}.allowPrivilegeEscalation")),
        "false"
    );
    assert_eq!(list(&ds, &format!("{security}.capabilities.drop")), ["ALL"]);
    let unit = read(&deploy("systemd/mirror.service"));
    let unit_capabilities: Vec<String> = unit
        .lines()
        .find_map(|line| line.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities=")
        .split_whitespace()
        .map(|cap| cap.trim_start_matches("CAP_").to_owned())
        .collect();
    assert_eq!(
        list(&ds, &format!("{security}.capabilities.add")),
        unit_capabilities,
        "the DaemonSet adds what the systemd unit grants"
    );
    assert_eq!(get(&ds, &format!("{security}.runAsUser")), "0");
    assert_eq!(
        get(&ds, &format!("{security}.readOnlyRootFilesystem")),
        "true"
    );
    assert_eq!(
        get(&ds, &format!("{security}.seccompProfile.type")),
        "Unconfined"
    );
    assert_eq!(
        get(&ds, &format!("{c}.image")),
        "ghcr.io/example/mirror:0.1.0"
    );
    assert_eq!(
        list(&ds, &format!("{c}.args")),
        ["run", "--config", "/etc/mirror/mirror.toml"]
    );
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            get(&ds, &format!("{c}.resources.{kind}.{resource}"));
        }
    }
    // Probes on /healthz of the metrics port, which is the ConfigMap's [metrics] listen port.
    let config = Config::from_toml(&configmap_toml(), "configmap").expect("valid config");
    assert_eq!(get(&ds, &format!("{c}.ports[0].name")), "metrics");
    assert_eq!(
        get(&ds, &format!("{c}.ports[0].containerPort")),
        config.metrics.listen.port().to_string()
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(get(&ds, &format!("{c}.{probe}.httpGet.path")), "/healthz");
        assert_eq!(get(&ds, &format!("{c}.{probe}.httpGet.port")), "metrics");
    }
    // Volumes: the ConfigMap at /etc/mirror (the file the args name), bpffs from the host.
    let mounts: BTreeMap<String, String> = (0..count(&ds, &format!("{c}.volumeMounts")))
        .map(|i| {
            (
                get(&ds, &format!("{c}.volumeMounts[{i}].name")).to_owned(),
                get(&ds, &format!("{c}.volumeMounts[{i}].mountPath")).to_owned(),
            )
        })
        .collect();
    let volumes: BTreeMap<String, usize> = (0..count(&ds, &format!("{pod}.volumes")))
        .map(|i| (get(&ds, &format!("{pod}.volumes[{i}].name")).to_owned(), i))
        .collect();
    let volume = |mount_path: &str| -> String {
        let name = mounts
            .iter()
            .find(|(_, path)| path.as_str() == mount_path)
            .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"))
            .0;
        format!("{pod}.volumes[{}]", volumes[name])
    };
    let config_volume = volume("/etc/mirror");
    let configmap = single(&deploy("kubernetes/configmap.yaml"));
    assert_eq!(
        get(&ds, &format!("{config_volume}.configMap.name")),
        get(&configmap, "metadata.name")
    );
    assert_eq!(
        get(&ds, &format!("{config_volume}.configMap.items[0].key")),
        "mirror.toml"
    );
    assert_eq!(
        get(&ds, &format!("{config_volume}.configMap.items[0].path")),
        "mirror.toml"
    );
    let bpffs = volume("/sys/fs/bpf");
    assert_eq!(get(&ds, &format!("{bpffs}.hostPath.path")), "/sys/fs/bpf");
}

/// The default DaemonSet is not privileged: `privileged: true` appears only in the commented
/// alternative for old kernels and runtimes (checked on the text, so that no other container,
/// init container or later edit brings it back).
#[test]
fn daemonset_is_not_privileged_by_default() {
    let daemonset = read(&deploy("kubernetes/daemonset.yaml"));
    let mut commented = 0;
    for line in daemonset.lines() {
        let code = line.split('#').next().unwrap_or("");
        let normalized: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            !normalized.contains("privileged: true")
                && !normalized.contains("privileged: \"true\""),
            "privileged in the default DaemonSet: {line}"
        );
        if line.trim_start().starts_with('#') && line.contains("privileged: true") {
            commented += 1;
        }
    }
    assert_eq!(
        commented, 1,
        "the privileged alternative stays documented, once, in a comment"
    );
    // And the parsed manifest agrees (no quoting or flow style hides one from the text check).
    if has_pyyaml("daemonset_is_not_privileged_by_default") {
        let ds = single(&deploy("kubernetes/daemonset.yaml"));
        let privileged: Vec<(&String, &String)> = ds
            .iter()
            .filter(|(key, _)| key.ends_with(".privileged"))
            .collect();
        assert!(!privileged.is_empty());
        assert!(
            privileged
                .iter()
                .all(|(_, value)| value.as_str() == "false"),
            "{privileged:?}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// systemd

/// The unit with its binary path pointed at a stub executable in `dir` (verify checks that the
/// commands exist; /usr/local/bin/mirror does not on a build machine).
fn unit_copy(dir: &TempDir, unit: &str) -> PathBuf {
    let stub = dir.0.join("mirror");
    fs::copy("/bin/true", &stub).expect("copying /bin/true as a stub");
    let path = dir.0.join("mirror.service");
    fs::write(
        &path,
        unit.replace("/usr/local/bin/mirror", &stub.display().to_string()),
    )
    .unwrap();
    path
}

/// `systemd-analyze verify`: exit status and every line about our unit (warnings such as
/// unknown keys do not change the exit status).
fn verify(unit: &Path) -> (bool, Vec<String>) {
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("running systemd-analyze");
    let complaints = text(&output)
        .lines()
        .filter(|line| line.contains("mirror.service"))
        .map(str::to_owned)
        .collect();
    (output.status.success(), complaints)
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let test = "systemd_unit_verifies_and_is_hardened";
    if !tool(
        test,
        "systemd-analyze",
        &["--version"],
        "systemd-analyze (Debian: systemd)",
    ) {
        return;
    }
    let unit = read(&deploy("systemd/mirror.service"));
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .collect();
    let setting = |name: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(key, _)| *key == name)
            .map(|(_, value)| *value)
            .collect()
    };
    assert_eq!(
        setting("ExecStart"),
        ["/usr/local/bin/mirror run --config /etc/mirror/mirror.toml"]
    );
    assert_eq!(setting("Restart"), ["on-failure"]);
    for capabilities in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        assert_eq!(
            setting(capabilities),
            ["CAP_BPF CAP_NET_ADMIN CAP_PERFMON"],
            "{capabilities}"
        );
    }
    assert!(
        !settings
            .iter()
            .any(|(_, value)| value.contains("CAP_SYS_ADMIN")),
        "no CAP_SYS_ADMIN"
    );
    for (name, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("DynamicUser", "yes"),
        ("User", "mirror"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        (
            "RestrictAddressFamilies",
            "AF_INET AF_INET6 AF_NETLINK AF_UNIX",
        ),
        ("LimitMEMLOCK", "infinity"),
    ] {
        assert_eq!(setting(name), [value], "{name}");
    }
    assert!(
        setting("SystemCallFilter")
            .iter()
            .any(|filter| filter.split(' ').any(|call| call == "bpf")),
        "the syscall filter must allow bpf()"
    );
    assert!(setting("PrivateUsers").is_empty() && setting("PrivateNetwork").is_empty());

    let dir = TempDir::new();
    let copy = unit_copy(&dir, &unit);
    let (ok, complaints) = verify(&copy);
    assert!(
        ok && complaints.is_empty(),
        "systemd-analyze verify: {complaints:#?}"
    );

    // The original differs only by the binary path: its only complaint may be that missing binary.
    let (_, complaints) = verify(&deploy("systemd/mirror.service"));
    let expected = "mirror.service: Command /usr/local/bin/mirror is not executable: No such file or directory";
    assert!(
        complaints.iter().all(|line| line == expected),
        "systemd-analyze verify: {complaints:#?}"
    );

    // Negative control: verify does catch a broken setting in this setup.
    let broken_dir = TempDir::new();
    let broken = unit_copy(
        &broken_dir,
        &unit.replace("Restart=on-failure", "Restart=sometimes"),
    );
    let (ok, complaints) = verify(&broken);
    assert!(
        !ok || !complaints.is_empty(),
        "an invalid Restart= passed verify"
    );

    // Exposure score: systemd's own hardening assessment, at most 2.5 ("OK") on its 0-10 scale.
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=25", "--no-pager"])
        .arg(&copy)
        .output()
        .expect("running systemd-analyze security");
    assert!(
        output.status.success(),
        "systemd-analyze security: {}",
        text(&output)
    );
}

/// The unit's capability set is what the daemon needs, no more: as an unprivileged user with
/// exactly AmbientCapabilities (via setpriv, in a fresh network namespace), `mirror capture`
/// loads and attaches the real classifier; without any one of them it fails.
#[test]
fn unit_capabilities_are_necessary_and_sufficient() {
    let test = "unit_capabilities_are_necessary_and_sufficient";
    if !privileged(test) || !tool(test, "setpriv", &["--version"], "setpriv (util-linux)") {
        return;
    }
    let unit = read(&deploy("systemd/mirror.service"));
    let capabilities: Vec<String> = unit
        .lines()
        .find_map(|line| line.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities=")
        .split_whitespace()
        .map(|cap| {
            cap.strip_prefix("CAP_")
                .expect("CAP_ name")
                .to_ascii_lowercase()
        })
        .collect();
    assert_eq!(capabilities, ["bpf", "net_admin", "perfmon"]);
    let binary = mirror_bin();
    let attaches = |caps: &[&String]| -> Result<(), String> {
        let set: String = caps.iter().map(|cap| format!(",+{cap}")).collect();
        let set = format!("-all{set}");
        let mut child = Command::new("unshare")
            .args(["--net", "--", "setpriv", "--reuid=65534", "--regid=65534"])
            .arg("--clear-groups")
            .arg(format!("--inh-caps={set}"))
            .arg(format!("--ambient-caps={set}"))
            .arg(format!("--bounding-set={set}"))
            .arg("--")
            .arg(&binary)
            .args(["capture", "--interface", "lo", "--port", "9"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning unshare/setpriv/mirror");
        let stderr = child.stderr.take().unwrap();
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut log = Vec::new();
        let result = loop {
            match lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.contains("capturing") => break Ok(()),
                Ok(line) => log.push(line),
                Err(_) => break Err(log.join("\n")),
            }
        };
        // setpriv execs mirror in place: this pid is the daemon.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
        result
    };
    let all: Vec<&String> = capabilities.iter().collect();
    attaches(&all).unwrap_or_else(|log| panic!("with {capabilities:?}: {log}"));
    for missing in &capabilities {
        let fewer: Vec<&String> = capabilities.iter().filter(|cap| *cap != missing).collect();
        assert!(
            attaches(&fewer).is_err(),
            "capture works without CAP_{}: the unit grants more than needed",
            missing.to_ascii_uppercase()
        );
    }
}

// ------------------------------------------------------------------------------------------
// Prometheus rules and PromQL

#[test]
fn promtool_accepts_and_unit_tests_the_alert_rules() {
    let test = "promtool_accepts_and_unit_tests_the_alert_rules";
    if !tool(
        test,
        "promtool",
        &["--version"],
        "promtool (Debian: prometheus)",
    ) {
        return;
    }
    let rules = deploy("prometheus/mirror-alerts.yaml");
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("running promtool");
    assert!(
        output.status.success(),
        "promtool check rules:\n{}",
        text(&output)
    );
    let report = text(&output);
    assert!(report.contains("SUCCESS: 10 rules found"), "{report}");

    // Behaviour: the alerts fire on synthetic series (and stay quiet on healthy ones).
    let output = Command::new("promtool")
        .args(["test", "rules"])
        .arg(mirror_tests::fixtures_dir().join("deploy/mirror-alerts.test.yaml"))
        .output()
        .expect("running promtool");
    assert!(
        output.status.success(),
        "promtool test rules:\n{}",
        text(&output)
    );
}

/// Every PromQL expression of the dashboard and the rollout templates, with the templating of
/// Grafana, Flagger and Argo Rollouts replaced by example values.
fn templated_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    let dashboard = single(&deploy("grafana/mirror-dashboard.json"));
    for (key, expr) in &dashboard {
        if key.ends_with(".expr") {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$target", ".*");
            queries.push((format!("dashboard {key}"), expr));
        }
    }
    for doc in flatten(&deploy("rollouts/flagger-metric-templates.yaml")) {
        let name = get(&doc, "metadata.name");
        let query = get(&doc, "spec.query")
            .replace("{{ target }}", "search")
            .replace("{{ variables.shadow }}", "shadow")
            .replace("{{ interval }}", "5m");
        queries.push((format!("flagger {name}"), query));
    }
    let argo = single(&deploy("rollouts/argo-analysis-template.yaml"));
    let args: BTreeSet<String> = (0..count(&argo, "spec.args"))
        .map(|i| get(&argo, &format!("spec.args[{i}].name")).to_owned())
        .collect();
    for i in 0..count(&argo, "spec.metrics") {
        let metric = format!("spec.metrics[{i}]");
        let name = get(&argo, &format!("{metric}.name"));
        // The Job metric (`mirror verdict`) has no PromQL of its own.
        let Some(query) = argo.get(&format!("{metric}.provider.prometheus.query")) else {
            continue;
        };
        let mut query = query.clone();
        while let Some(start) = query.find("{{args.") {
            let end = start + query[start..].find("}}").expect("closed {{");
            let arg = &query[start + 7..end];
            assert!(args.contains(arg), "argo {name} uses undeclared arg {arg}");
            let value = match arg {
                "target" => "search",
                "shadow" => "shadow",
                _ => "5m",
            };
            query.replace_range(start..end + 2, value);
        }
        queries.push((format!("argo {name}"), query));
    }
    queries
}

#[test]
fn dashboard_and_rollout_queries_are_valid_promql() {
    let test = "dashboard_and_rollout_queries_are_valid_promql";
    if !has_pyyaml(test)
        || !tool(
            test,
            "promtool",
            &["--version"],
            "promtool (Debian: prometheus)",
        )
    {
        return;
    }
    let queries = templated_queries();
    assert!(queries.len() >= 20, "found only {} queries", queries.len());
    // promtool parses recording rules: one per query.
    let mut rules = String::from("groups:\n  - name: deploy-queries\n    rules:\n");
    for (index, (source, query)) in queries.iter().enumerate() {
        assert!(
            !query.contains("{{") && !query.contains('$'),
            "{source}: unreplaced template in {query}"
        );
        rules.push_str(&format!(
            "      # {source}\n      - record: deploy_query_{index}\n        expr: |\n"
        ));
        for line in query.lines() {
            rules.push_str(&format!("          {line}\n"));
        }
    }
    let dir = TempDir::new();
    let path = dir.0.join("queries.yaml");
    fs::write(&path, &rules).unwrap();
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("running promtool");
    assert!(
        output.status.success(),
        "promtool rejects a query:\n{}\n{rules}",
        text(&output)
    );
}

/// Every selector of a candidate's series names the candidate: `role="shadow"` alone would also
/// take a second candidate's series, and a selector without a role the baseline's.
fn assert_selects_the_candidate(query: &str, shadow: &str, source: &str) {
    for family in [
        "mirror_response_duration_seconds_bucket",
        "mirror_responses_total",
        "mirror_response_mismatches_total",
        "mirror_replays_total",
    ] {
        for (at, _) in query.match_indices(&format!("{family}{{")) {
            // Template variables hold braces too: a selector ends where its range starts.
            let selector = &query[at..at + query[at..].find("}[").expect("a range selector")];
            if selector.contains(r#"role="primary""#) {
                continue;
            }
            assert!(
                selector.contains(&format!(r#"shadow="{shadow}""#)),
                "{source}: {selector} does not select the candidate"
            );
            if family.starts_with("mirror_respon") && family != "mirror_response_mismatches_total" {
                assert!(
                    selector.contains(r#"role="shadow""#),
                    "{source}: {selector} could count a baseline"
                );
            }
        }
    }
}

#[test]
fn rollout_templates_are_structurally_valid() {
    if !has_pyyaml("rollout_templates_are_structurally_valid") {
        return;
    }
    let flagger = flatten(&deploy("rollouts/flagger-metric-templates.yaml"));
    assert!(flagger.len() >= 3);
    let mut names = BTreeSet::new();
    for doc in &flagger {
        assert_eq!(get(doc, "apiVersion"), "flagger.app/v1beta1");
        assert_eq!(get(doc, "kind"), "MetricTemplate");
        let name = get(doc, "metadata.name");
        assert!(names.insert(name.to_owned()));
        assert_eq!(get(doc, "spec.provider.type"), "prometheus");
        assert!(get(doc, "spec.provider.address").starts_with("http"));
        let query = get(doc, "spec.query");
        assert!(query.contains("{{ target }}"));
        assert_selects_the_candidate(query, "{{ variables.shadow }}", name);
    }
    let argo = single(&deploy("rollouts/argo-analysis-template.yaml"));
    assert_eq!(get(&argo, "apiVersion"), "argoproj.io/v1alpha1");
    assert_eq!(get(&argo, "kind"), "AnalysisTemplate");
    let args: BTreeMap<&str, Option<&str>> = (0..count(&argo, "spec.args"))
        .map(|i| {
            let arg = format!("spec.args[{i}]");
            let value = argo.get(&format!("{arg}.value")).map(String::as_str);
            (get(&argo, &format!("{arg}.name")), value)
        })
        .collect();
    assert_eq!(
        args.get("shadow"),
        Some(&Some("shadow")),
        "the one shadow by default"
    );
    assert_eq!(args.get("target"), Some(&None), "the target must be given");
    let metrics = count(&argo, "spec.metrics");
    let mut conditions = Vec::new();
    let mut jobs = Vec::new();
    for i in 0..metrics {
        let metric = format!("spec.metrics[{i}]");
        let name = get(&argo, &format!("{metric}.name"));
        if argo.contains_key(&format!("{metric}.provider.job.spec.backoffLimit")) {
            jobs.push(metric);
            continue;
        }
        let condition = get(&argo, &format!("{metric}.successCondition"));
        assert!(condition.contains("result[0]"));
        conditions.push(condition);
        assert_eq!(
            get(&argo, &format!("{metric}.provider.prometheus.address")),
            "{{args.prometheus-address}}"
        );
        let query = get(&argo, &format!("{metric}.provider.prometheus.query"));
        assert_selects_the_candidate(query, "{{args.shadow}}", name);
    }
    // The gates the issue asks for: P99 ratio 1.5, 5xx delta one point, mismatches 1%.
    assert!(conditions.len() >= 3);
    for bound in ["< 1.5", "<= 0.01", "< 0.01"] {
        assert!(
            conditions
                .iter()
                .any(|condition| condition.ends_with(bound)),
            "no condition with {bound}: {conditions:?}"
        );
    }
    // The decision: one Job running `mirror verdict` on the cluster's evidence, judged by its
    // exit status (no retry: a second run must not turn a fail into a pass).
    let [job] = jobs.as_slice() else {
        panic!("one Job metric expected, found {jobs:?}");
    };
    let spec = format!("{job}.provider.job.spec");
    assert_eq!(get(&argo, &format!("{spec}.backoffLimit")), "0");
    let pod = format!("{spec}.template.spec");
    assert_eq!(get(&argo, &format!("{pod}.restartPolicy")), "Never");
    let container = format!("{pod}.containers[0]");
    let daemonset = single(&deploy("kubernetes/daemonset.yaml"));
    assert_eq!(
        get(&argo, &format!("{container}.image")),
        get(&daemonset, "spec.template.spec.containers[0].image"),
        "the mirror image"
    );
    assert_eq!(
        list(&argo, &format!("{container}.args")),
        [
            "verdict",
            "--prometheus-url",
            "{{args.prometheus-address}}",
            "--target",
            "{{args.target}}",
            "--shadow",
            "{{args.shadow}}",
            "--window",
            "{{args.window}}",
        ]
    );
    // The arguments are what `mirror verdict` accepts.
    let cli = mirror::cli::Cli::try_parse_from(
        ["mirror"]
            .into_iter()
            .chain(list(&argo, &format!("{container}.args")).iter().map(
                |arg| match arg.as_str() {
                    "{{args.prometheus-address}}" => "http://prometheus:9090",
                    "{{args.window}}" => args["window"].expect("a default window"),
                    other => other,
                },
            )),
    );
    assert!(cli.is_ok(), "{cli:?}");

    // The Flagger gate: `mirror verdict --serve` behind a Service, pods the `mirror` Service
    // (the DaemonSet's metrics) does not select.
    let gate = flatten(&deploy("rollouts/verdict-gate.yaml"));
    let of_kind = |kind: &str| {
        gate.iter()
            .find(|doc| doc.get("kind").map(String::as_str) == Some(kind))
            .unwrap_or_else(|| panic!("verdict-gate.yaml has no {kind}"))
    };
    let (deployment, service) = (of_kind("Deployment"), of_kind("Service"));
    let args = list(deployment, "spec.template.spec.containers[0].args");
    assert_eq!(args[..2], ["verdict", "--prometheus-url"]);
    let cli = mirror::cli::Cli::try_parse_from(
        ["mirror"]
            .into_iter()
            .chain(args.iter().map(String::as_str)),
    );
    let Ok(mirror::cli::Cli {
        command: mirror::cli::Command::Verdict(verdict),
        ..
    }) = cli
    else {
        panic!("not a `mirror verdict` line: {args:?}");
    };
    let port = verdict.serve.expect("--serve").port().to_string();
    assert_eq!(
        get(
            deployment,
            "spec.template.spec.containers[0].ports[0].containerPort"
        ),
        port
    );
    for (key, value) in service {
        if let Some(label) = key.strip_prefix("spec.selector.") {
            assert_eq!(
                deployment.get(&format!("spec.template.metadata.labels.{label}")),
                Some(value),
                "the gate's Service selects {label}={value}, its pods lack it"
            );
        }
    }
    let metrics_service = single(&deploy("kubernetes/service.yaml"));
    let selects_gate = metrics_service
        .iter()
        .filter_map(|(key, value)| Some((key.strip_prefix("spec.selector.")?, value)))
        .all(|(label, value)| {
            deployment.get(&format!("spec.template.metadata.labels.{label}")) == Some(value)
        });
    assert!(
        !selects_gate,
        "the DaemonSet's metrics Service would select the gate's pods"
    );
    for doc in &gate {
        assert_eq!(get(doc, "metadata.namespace"), "mirror-system");
    }
}

/// The gate's Deployment and Service, and the AnalysisTemplate's Job as the Job Argo Rollouts
/// makes of it, against the Kubernetes schemas (the AnalysisTemplate itself is a CRD).
#[test]
fn rollout_manifests_validate_against_the_schemas() {
    let test = "rollout_manifests_validate_against_the_schemas";
    if !has_pyyaml(test)
        || !tool(
            test,
            "kubernetes-validate",
            &["--version"],
            "kubernetes-validate (PyPI)",
        )
    {
        return;
    }
    let dir = TempDir::new();
    let job = dir.0.join("analysis-job.yaml");
    let extract = r#"
import sys, yaml
template = yaml.safe_load(open(sys.argv[1]))
jobs = [m["provider"]["job"] for m in template["spec"]["metrics"] if "job" in m["provider"]]
assert len(jobs) == 1, jobs
job = {"apiVersion": "batch/v1", "kind": "Job",
       "metadata": dict(jobs[0].get("metadata", {}), name="mirror-verdict", namespace="mirror-system"),
       "spec": jobs[0]["spec"]}
yaml.safe_dump(job, open(sys.argv[2], "w"))
"#;
    let output = Command::new("python3")
        .args(["-c", extract])
        .arg(deploy("rollouts/argo-analysis-template.yaml"))
        .arg(&job)
        .output()
        .expect("running python3");
    assert!(output.status.success(), "{}", text(&output));
    let manifests = [deploy("rollouts/verdict-gate.yaml"), job];
    for version in KUBERNETES_VERSIONS {
        let report = kubernetes_validate(version, &manifests);
        let passed = report
            .lines()
            .filter(|line| line.contains(" passed "))
            .count();
        // Deployment, Service, Job.
        assert_eq!(passed, 3, "kubernetes-validate {version}:\n{report}");
    }
}

/// `kubernetes-validate --strict` of `files` against Kubernetes `version`: its report, which
/// must be a success without warnings or errors.
fn kubernetes_validate(version: &str, files: &[PathBuf]) -> String {
    let output = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", version])
        .args(files)
        .output()
        .expect("running kubernetes-validate");
    let report = text(&output);
    assert!(
        output.status.success() && !report.contains("WARN") && !report.contains("ERROR"),
        "kubernetes-validate {version}:\n{report}"
    );
    report
}

// ------------------------------------------------------------------------------------------
// Metric names

/// What the daemon exports: name -> Prometheus type. The metrics registered by
/// `Metrics::new` are read from the real endpoint (`/metrics` of `metrics::server::bind`);
/// those encoded at scrape time by `CaptureCollector` (which needs the loaded classifier) are
/// read from `encode_family(..., "name", ...)` calls in src/metrics/mod.rs, counters with
/// `_total` as the endpoint names them.
fn exported_metrics() -> BTreeMap<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (body, health, verdict) = runtime.block_on(async {
        let (metrics, mut registry) = mirror::metrics::Metrics::new();
        populate(&metrics);
        registry.register_collector(Box::new(mirror::pipeline::EvidenceCollector::new(
            evidence(),
        )));
        let (addr, serve) = mirror::metrics::server::bind(
            "127.0.0.1:0".parse().expect("address"),
            Arc::new(registry),
            mirror::verdict::Policy::default(),
        )
        .await
        .expect("binding the metrics endpoint");
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .expect("write");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("read");
            response
        };
        let client = async {
            (
                get("/metrics").await,
                get("/healthz").await,
                get("/verdict").await,
            )
        };
        tokio::select! {
            served = serve => panic!("metrics endpoint stopped: {served:?}"),
            responses = client => responses,
        }
    });
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // This node's verdict, from the same registry: one candidate with one compared exchange.
    assert!(verdict.starts_with("HTTP/1.1 200"), "{verdict}");
    assert!(
        verdict.contains(r#"{"verdict":"inconclusive","targets":[{"target":"search""#),
        "{verdict}"
    );
    let mut exported: BTreeMap<String, String> = body
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect();

    let source = read(&repo().join("mirror-userspace/src/metrics/mod.rs"));
    // Every metric `Metrics::new` registers was served (so `populate` covers them all), and
    // every family the evidence collector encodes (its names are the `"mirror_..."` literals of
    // pipeline/evidence.rs).
    let mut registered: BTreeSet<String> = source
        .split("register(")
        .skip(1)
        .filter_map(|call| call.trim_start().strip_prefix('"'))
        .filter_map(|call| call.split('"').next())
        .map(str::to_owned)
        .collect();
    let evidence_source = read(&repo().join("mirror-userspace/src/pipeline/evidence.rs"));
    let evidence_families: Vec<String> = evidence_source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|literal| literal.starts_with("mirror_"))
        .map(str::to_owned)
        .collect();
    assert!(evidence_families.len() >= 6, "{evidence_families:?}");
    registered.extend(evidence_families);
    let served: BTreeSet<String> = exported
        .iter()
        .map(|(name, kind)| match kind.as_str() {
            "counter" => name.strip_suffix("_total").unwrap_or(name).to_owned(),
            _ => name.clone(),
        })
        .collect();
    assert_eq!(
        served, registered,
        "registered in src/metrics/mod.rs vs served by /metrics: give new metrics a value in \
         populate()"
    );
    let (_, function) = source
        .split_once("fn encode_family(")
        .expect("encode_family in metrics/mod.rs");
    let function = &function[..function.find("\n}\n").expect("end of encode_family")];
    assert!(
        function.contains("MetricType::Counter"),
        "encode_family no longer encodes counters: update this test"
    );
    let mut collector = 0;
    for call in source.split("encode_family(").skip(1) {
        let call = call.trim_start();
        // Calls pass the collector's encoder; skip the definition and `metric.encode_family`.
        if !call.starts_with("&mut encoder") {
            continue;
        }
        let name = call
            .split('"')
            .nth(1)
            .expect("encode_family(encoder, \"name\", ...)");
        exported.insert(format!("{name}_total"), "counter".to_owned());
        collector += 1;
    }
    assert!(collector >= 1 && exported.contains_key("mirror_capture_drops_total"));
    exported
}

/// The evidence of one compared exchange: a field that differs and a numeric pair, so the
/// evidence collector encodes every one of its families.
fn evidence() -> mirror::pipeline::SharedEvidence {
    use mirror::verdict::{FieldDiff, NumericPair, Policy, diff::FieldOutcome};
    let shadows = vec![mirror::pipeline::ShadowRole {
        name: "shadow".to_owned(),
        baseline: false,
    }];
    let mut target = mirror::pipeline::TargetEvidence::new("search", shadows, &Policy::default());
    let outcome = FieldOutcome {
        differs: true,
        volatile: false,
    };
    let diff = FieldDiff {
        fields: [("/price".to_owned(), outcome)].into(),
        numeric: vec![NumericPair {
            field: "/price".to_owned(),
            primary: 10.0,
            shadow: 12.0,
        }],
        numeric_truncated: false,
    };
    target.record(&[(0, diff)]);
    let evidence = mirror::pipeline::SharedEvidence::default();
    evidence.lock().targets.push(target);
    evidence
}

/// Gives every family one child: prometheus-client leaves empty families out of `/metrics`.
fn populate(metrics: &mirror::metrics::Metrics) {
    use mirror::metrics::{
        DirectionLabels, ReasonLabels, TargetDirectionLabels, TargetKindLabels, TargetLabels,
        TargetOutcomeLabels, TargetReasonLabels, TargetRoleCodeLabels, TargetRoleLabels,
        TargetShadowLabels, TargetShadowReasonLabels,
    };
    let target = || "search".to_owned();
    let shadow = || "shadow".to_owned();
    let direction = DirectionLabels {
        direction: "request",
    };
    metrics.packets.get_or_create(&direction).inc();
    metrics.capture_bytes.get_or_create(&direction).inc();
    metrics.tcp_streams_active.set(1);
    metrics.tcp_gaps.inc();
    metrics.tcp_conflicting_bytes.inc();
    for family in [&metrics.target_gaps, &metrics.target_gap_bytes] {
        family
            .get_or_create(&TargetDirectionLabels {
                target: target(),
                direction: "response",
            })
            .inc();
    }
    metrics
        .tcp_streams_evicted
        .get_or_create(&ReasonLabels { reason: "idle" })
        .inc();
    for family in [&metrics.requests, &metrics.parse_errors] {
        family
            .get_or_create(&TargetLabels { target: target() })
            .inc();
    }
    // One real label value of each `{target, reason}` family.
    for (family, reason) in [
        (&metrics.requests_skipped, "sampled_out"),
        (&metrics.requests_lost, "gap"),
        (&metrics.connections_skipped, "tls"),
        (&metrics.responses_unpaired, "joined"),
    ] {
        family
            .get_or_create(&TargetReasonLabels {
                target: target(),
                reason,
            })
            .inc();
    }
    for (family, reason) in [
        (&metrics.comparisons_cancelled, "expired"),
        (&metrics.comparisons_digest_only, "not_json"),
    ] {
        family
            .get_or_create(&TargetShadowReasonLabels {
                target: target(),
                shadow: shadow(),
                reason,
            })
            .inc();
    }
    metrics
        .comparisons
        .get_or_create(&TargetShadowLabels {
            target: target(),
            shadow: shadow(),
        })
        .inc();
    metrics
        .shadow_info
        .get_or_create(&TargetRoleLabels {
            target: target(),
            role: "shadow",
            shadow: shadow(),
        })
        .set(1);
    metrics
        .requests_lost_estimated
        .get_or_create(&TargetLabels { target: target() })
        .inc_by(0.5);
    metrics
        .replays
        .get_or_create(&TargetOutcomeLabels {
            target: target(),
            shadow: shadow(),
            outcome: "ok",
        })
        .inc();
    metrics
        .replay_queue_depth
        .get_or_create(&TargetShadowLabels {
            target: target(),
            shadow: shadow(),
        })
        .set(1);
    metrics
        .shadow_connections_opened
        .get_or_create(&TargetShadowLabels {
            target: target(),
            shadow: shadow(),
        })
        .inc();
    metrics
        .response_duration
        .get_or_create(&TargetRoleLabels {
            target: target(),
            role: "shadow",
            shadow: shadow(),
        })
        .observe(0.001);
    metrics
        .responses
        .get_or_create(&TargetRoleCodeLabels {
            target: target(),
            role: "shadow",
            shadow: shadow(),
            code: 200,
        })
        .inc();
    metrics
        .mismatches
        .get_or_create(&TargetKindLabels {
            target: target(),
            shadow: shadow(),
            kind: "status",
        })
        .inc();
    // What the verdict reads: the shadows and their roles, and the pairs compared.
    metrics
        .shadow_info
        .get_or_create(&TargetRoleLabels {
            target: target(),
            role: "shadow",
            shadow: shadow(),
        })
        .set(1);
    metrics
        .comparisons
        .get_or_create(&TargetShadowLabels {
            target: target(),
            shadow: shadow(),
        })
        .inc();
    metrics
        .comparisons_digest_only
        .get_or_create(&TargetShadowReasonLabels {
            target: target(),
            shadow: shadow(),
            reason: "not_json",
        })
        .inc();
    // Targets with `pods`: their pod watch.
    let labels = TargetLabels { target: target() };
    metrics.kubernetes_watch_up.get_or_create(&labels).set(1);
    metrics.kubernetes_pod_events.get_or_create(&labels).inc();
    metrics
        .kubernetes_pod_addresses
        .get_or_create(&labels)
        .set(2);
}

/// `mirror_*` names in `text` that the daemon does not export. Histograms are only queryable
/// through `_bucket`, `_sum` and `_count` (`bare_histograms` allows the family name, for prose).
fn unknown_metrics(
    text: &str,
    exported: &BTreeMap<String, String>,
    bare_histograms: bool,
) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut unknown = BTreeSet::new();
    let mut start = 0;
    while let Some(found) = text[start..].find("mirror_") {
        let at = start + found;
        let end = at
            + text[at..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(text.len() - at);
        start = end;
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        let name = text[at..end].trim_end_matches('_');
        let known = match exported.get(name).map(String::as_str) {
            Some("histogram") => bare_histograms,
            Some(_) => true,
            None => ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| exported.get(base).is_some_and(|kind| kind == "histogram"))
            }),
        };
        if !known {
            unknown.insert(name.to_owned());
        }
    }
    unknown
}

#[test]
fn dashboards_alerts_and_templates_only_use_exported_metrics() {
    let exported = exported_metrics();
    for contract in [
        "mirror_packets_total",
        "mirror_replays_total",
        "mirror_requests_lost_total",
        "mirror_replay_queue_depth",
    ] {
        assert!(exported.contains_key(contract), "{contract}: {exported:?}");
    }
    assert_eq!(
        exported
            .get("mirror_response_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    // The checker itself: a counter without `_total`, a bare histogram and an invented name.
    assert_eq!(
        unknown_metrics(
            "rate(mirror_requests[5m]) mirror_response_duration_seconds mirror_invented_total \
             mirror_response_duration_seconds_bucket mirror_replays_total",
            &exported,
            false
        ),
        [
            "mirror_invented_total",
            "mirror_requests",
            "mirror_response_duration_seconds"
        ]
        .map(String::from)
        .into()
    );

    let queries = [
        "grafana/mirror-dashboard.json",
        "prometheus/mirror-alerts.yaml",
        "rollouts/flagger-metric-templates.yaml",
        "rollouts/argo-analysis-template.yaml",
    ];
    let prose = [
        "README.md",
        "kubernetes/daemonset.yaml",
        "kubernetes/configmap.yaml",
        "rollouts/verdict-gate.yaml",
    ];
    let mut problems = Vec::new();
    for (files, bare) in [(&queries[..], false), (&prose[..], true)] {
        for file in files {
            let unknown = unknown_metrics(&read(&deploy(file)), &exported, bare);
            if !unknown.is_empty() {
                problems.push(format!("deploy/{file}: {unknown:?}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "names the daemon does not export (exported: {:?}):\n{}",
        exported.keys().collect::<Vec<_>>(),
        problems.join("\n")
    );

    // The dashboard shows what the issue asks for.
    let dashboard = read(&deploy("grafana/mirror-dashboard.json"));
    for metric in [
        "mirror_response_duration_seconds_bucket",
        "mirror_responses_total",
        "mirror_response_mismatches_total",
        "mirror_capture_drops_total",
        "mirror_replays_total",
        "mirror_requests_lost_total",
        "mirror_replay_queue_depth",
        // What pairing only where byte positions prove it leaves out, and why.
        "mirror_connections_skipped_total",
        "mirror_responses_unpaired_total",
        "mirror_response_duration_seconds_count",
        "mirror_comparisons_cancelled_total",
        "mirror_tcp_target_gaps_total",
        "mirror_requests_lost_estimated_total",
        // Per field: the candidate's difference rate against the baseline's noise.
        "mirror_field_differences_total",
        "mirror_field_samples_total",
        "mirror_field_baseline_differences_total",
        "mirror_field_baseline_samples_total",
    ] {
        assert!(dashboard.contains(metric), "the dashboard lacks {metric}");
    }
    // Connection-level skips left `mirror_requests_skipped_total`: no query may look for them
    // there (they would read 0 for ever), nor the documentation send readers there.
    for file in queries.iter().chain(&prose) {
        let text = read(&deploy(file));
        for (at, _) in text.match_indices("mirror_requests_skipped_total") {
            let selector = &text[at..text[at..].find(')').map_or(text.len(), |end| at + end)];
            for reason in ["tls", "http2", "ambiguous_length"] {
                assert!(
                    !selector.contains(reason),
                    "deploy/{file}: {reason} is in mirror_connections_skipped_total now"
                );
            }
        }
    }
}

#[test]
fn dashboard_is_well_formed() {
    if !has_pyyaml("dashboard_is_well_formed") {
        return;
    }
    let dashboard = single(&deploy("grafana/mirror-dashboard.json"));
    assert!(!get(&dashboard, "uid").is_empty() && !get(&dashboard, "title").is_empty());
    let variables = count(&dashboard, "templating.list");
    let target = (0..variables)
        .find(|i| get(&dashboard, &format!("templating.list[{i}].name")) == "target")
        .expect("a `target` template variable");
    assert!(
        get(&dashboard, &format!("templating.list[{target}].definition"))
            .contains("mirror_requests_total, target")
    );
    let panels = count(&dashboard, "panels");
    let mut ids = BTreeSet::new();
    let mut side_by_side = 0;
    let mut fields_vs_noise = 0;
    for i in 0..panels {
        let panel = format!("panels[{i}]");
        assert!(ids.insert(get(&dashboard, &format!("{panel}.id")).to_owned()));
        let x: u32 = get(&dashboard, &format!("{panel}.gridPos.x"))
            .parse()
            .unwrap();
        let w: u32 = get(&dashboard, &format!("{panel}.gridPos.w"))
            .parse()
            .unwrap();
        assert!(x + w <= 24, "{panel} is wider than the grid");
        if get(&dashboard, &format!("{panel}.type")) == "row" {
            continue;
        }
        let targets = count(&dashboard, &format!("{panel}.targets"));
        assert!(targets >= 1, "{panel} has no query");
        let exprs: Vec<&str> = (0..targets)
            .map(|t| get(&dashboard, &format!("{panel}.targets[{t}].expr")))
            .collect();
        if exprs.iter().any(|e| e.contains(r#"role="primary""#))
            && exprs.iter().any(|e| e.contains(r#"role="shadow""#))
        {
            side_by_side += 1;
        }
        // Per field, the candidate's difference rate next to the baseline's on the same fields.
        if exprs
            .iter()
            .any(|e| e.contains("mirror_field_differences_total"))
        {
            fields_vs_noise += 1;
            assert!(
                exprs
                    .iter()
                    .any(|e| e.contains("mirror_field_baseline_differences_total")
                        && e.contains("mirror_field_baseline_samples_total")
                        && e.contains("by (target, shadow, field)")),
                "{panel}: no baseline noise per field next to the candidate's rate"
            );
        }
        // Every per-target query follows the `target` variable.
        for expr in exprs {
            assert!(
                expr.contains(r#"target=~"$target""#)
                    || ![
                        "mirror_requests_total",
                        "mirror_responses_total",
                        "mirror_replays_total",
                        "mirror_field_"
                    ]
                    .iter()
                    .any(|m| expr.contains(m)),
                "{panel} ignores $target: {expr}"
            );
        }
    }
    assert!(
        side_by_side >= 3,
        "P50, P99 and 5xx share: primary vs shadow"
    );
    assert_eq!(fields_vs_noise, 1, "one per-field panel");
}

// ------------------------------------------------------------------------------------------
// Dockerfile

#[test]
fn dockerfile_builds_from_files_that_exist() {
    let dockerfile = read(&deploy("Dockerfile"));
    // Join continuation lines.
    let joined = dockerfile.replace("\\\n", " ");
    let instructions: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let stages: Vec<&str> = instructions
        .iter()
        .filter_map(|line| line.strip_prefix("FROM "))
        .collect();
    assert_eq!(
        stages,
        [
            "rust:1.95-bookworm AS builder",
            "debian:bookworm-slim AS runtime"
        ]
    );

    // Every COPY from the build context (the repository root) names something that exists;
    // the workspace members are all there (cargo refuses a workspace with a missing member).
    let mut copied = BTreeSet::new();
    for line in &instructions {
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        if args.starts_with("--from=") {
            assert!(args.starts_with("--from=builder "), "{line}");
            continue;
        }
        let parts: Vec<&str> = args.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            assert!(
                repo().join(source).exists(),
                "Dockerfile copies {source}, which is not in the repository"
            );
            copied.insert(source.trim_end_matches('/').to_owned());
        }
    }
    let manifest = read(&repo().join("Cargo.toml"));
    let members = manifest
        .lines()
        .find_map(|line| line.strip_prefix("members = "))
        .expect("workspace members");
    for member in members.split('"').skip(1).step_by(2) {
        assert!(
            copied.contains(member),
            "Dockerfile does not copy member {member}"
        );
    }
    assert!(copied.contains("Cargo.lock"));

    // The build command and the toolchain match the repository.
    let userspace = read(&repo().join("mirror-userspace/Cargo.toml"));
    assert!(userspace.contains("[[bin]]\nname = \"mirror\""));
    assert!(joined.contains("cargo build --release --locked -p mirror-userspace --bin mirror"));
    let setup = read(&repo().join("xtask/src/setup.rs"));
    let linker = setup
        .split("BPF_LINKER_VERSION: &str = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("BPF_LINKER_VERSION in xtask/src/setup.rs");
    assert!(
        joined.contains(&format!("cargo install bpf-linker@{linker} --locked")),
        "Dockerfile must install bpf-linker {linker}, as cargo xtask setup does"
    );
    assert!(joined.contains("--component rust-src"));
    // The runtime stage gets the binary from the builder and runs the daemon.
    assert!(joined.contains("COPY --from=builder /out/mirror /usr/local/bin/mirror"));
    assert!(joined.contains(r#"ENTRYPOINT ["/usr/local/bin/mirror"]"#));
    let runtime = &joined[joined.find("AS runtime").unwrap()..];
    assert!(
        !runtime.contains("RUN "),
        "the runtime stage stays a plain copy"
    );
}
