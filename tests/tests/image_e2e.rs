//! The image that `cargo xtask image` builds, run with the DaemonSet's pod template.
//!
//! `deploy/kubernetes/daemonset.yaml`'s pod template becomes a `kind: Pod` manifest, with the
//! ConfigMap as a second document (podman mounts it as the DaemonSet does) carrying a test
//! configuration: capture on the server namespace's veth, one target on port 8080, the shadow a
//! recording server in the client namespace. `podman kube play` runs it inside the server
//! namespace (hostNetwork: the pod shares that namespace as a DaemonSet pod shares its node's).
//! The test checks what the runtime made of the manifest - the network namespace, the
//! capability sets, no_new_privs, the seccomp mode, the user, the read-only root, the ConfigMap
//! and bpffs mounts, the environment, the resource limits - then sends requests from the client
//! namespace to the primary, and asserts that the shadow received the replays and that
//! `/healthz` and `/metrics` answer (curl inside the namespace, as the kubelet and Prometheus
//! reach a hostNetwork pod), and that the daemon exits cleanly on the pod's stop.
//!
//! What podman 4.3 (Debian 12) cannot take as Kubernetes would, and what the test does instead
//! (each is asserted on the source manifest first, so a change to the DaemonSet is noticed):
//!
//! - `ports`: podman < 4.8 publishes every containerPort as a host port, and refuses port
//!   mappings with host networking ("PortMappings can only be used with Bridge or slirp4netns
//!   networking"; containers/podman#17028, fixed in 4.8). For a hostNetwork pod Kubernetes treats
//!   them as information. Removed; the test reaches the named port itself.
//! - Probes: podman runs an httpGet liveness probe as `curl` inside the container (the image has
//!   no curl), cannot resolve a named port before 4.7 and ignores readiness probes. Removed; the
//!   test does what the kubelet does: GET on the probe's path and port from the pod's network.
//! - `NODE_NAME` from `fieldRef: spec.nodeName`: podman supports only metadata.name, .uid,
//!   labels and annotations ("fieldPath spec.nodeName is either not valid or not supported").
//!   Replaced by a literal node name, checked in the container's environment.
//! - `securityContext.seccompProfile`: kube play ignores the field and reads only the
//!   (pre-1.19) seccomp annotations; it is translated into
//!   `container.seccomp.security.alpha.kubernetes.io/<container>`, and the mode checked in
//!   /proc. The test also shows the field is needed: with podman's default profile (that of
//!   containers-common, which allows bpf() only with CAP_SYS_ADMIN) the same capabilities fail.
//! - ConfigMap and emptyDir volumes become podman volumes named after the ConfigMap and the
//!   volume: renamed uniquely per run (and removed after), so runs cannot share them.
//!   `emptyDir.medium: Memory` is not honoured (a disk volume), which the daemon does not rely on.
//!
//! This machine, not the manifest: the test runs podman with its own containers.conf
//! (CONTAINERS_CONF) - OCI runtime runc, since crun 1.8 refuses the hybrid cgroup hierarchy
//! here ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"), and
//! rlimits at this process's hard limits, since podman raises RLIMIT_NOFILE to 1048576 by
//! default and the sandbox has no CAP_SYS_RESOURCE. It enters the namespace with `nsenter
//! --net` rather than `ip netns exec`, which remounts /sys and so hides the cgroup v1
//! hierarchy from podman ("mkdir /sys/fs/cgroup/blkio: no such file or directory").
//!
//! Needs root and the tools `cargo xtask setup` installs (podman, buildah, mmdebstrap,
//! catatonit, runc, PyYAML, curl); under `CI=true` a missing one fails the test.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use mirror_tests::{
    daemon::Metrics,
    mirroring::{PORT, send},
    netns::{CLIENT_ADDR, NetNs},
    privileged, unique_name,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command`, failing with its output unless it succeeds; returns stdout.
fn check(command: &mut Command) -> String {
    let line = format!("{command:?}");
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("starting {line}: {error}"));
    assert!(
        output.status.success(),
        "{line} failed ({}):\n{}",
        output.status,
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The tools this test needs; missing ones skip it with a message, or fail it under CI.
fn tools(test: &str) -> bool {
    let checks: [(&str, &[&str], &str); 7] = [
        ("podman", &["--version"], "podman"),
        ("buildah", &["--version"], "buildah"),
        ("mmdebstrap", &["--version"], "mmdebstrap"),
        ("runc", &["--version"], "runc"),
        ("catatonit", &["--version"], "catatonit"),
        ("curl", &["--version"], "curl"),
        ("python3", &["-c", "import yaml"], "Python 3 with PyYAML"),
    ];
    let missing: Vec<&str> = checks
        .iter()
        .filter(|(program, args, _)| {
            !Command::new(program)
                .args(*args)
                .output()
                .is_ok_and(|output| output.status.success())
        })
        .map(|(_, _, what)| *what)
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs {missing:?}; under CI it fails instead of skipping; `cargo xtask setup` \
         installs them"
    );
    eprintln!("skipping {test}: needs {missing:?}; `cargo xtask setup` installs them");
    false
}

/// Turns the DaemonSet's pod template into a Pod manifest (ConfigMap first), with the
/// adaptations listed in the module documentation, each asserted on the source first. Prints
/// what the runtime must then show, as `key=value` lines.
const TO_POD: &str = r#"
import sys, yaml
ds_path, cm_path, pod, cm_name, config_path, node, suffix, out = sys.argv[1:]
ds = yaml.safe_load(open(ds_path))
cm = yaml.safe_load(open(cm_path))
template = ds["spec"]["template"]
spec = template["spec"]
assert len(spec["containers"]) == 1, "one container"
c = spec["containers"][0]
sc = c["securityContext"]
facts = {}
def fact(key, value):
    facts[key] = value

fact("container", c["name"])
fact("image", c["image"])
fact("host_network", spec.get("hostNetwork", False))
fact("privileged", sc.get("privileged", False))
fact("allow_privilege_escalation", sc.get("allowPrivilegeEscalation", True))
fact("caps_add", ",".join(sc["capabilities"]["add"]))
fact("caps_drop", ",".join(sc["capabilities"]["drop"]))
fact("run_as_user", sc["runAsUser"])
fact("read_only_root", sc.get("readOnlyRootFilesystem", False))
fact("seccomp", sc.get("seccompProfile", {}).get("type", ""))

def quantity(value):
    value = str(value)
    for suffix, factor in (("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)):
        if value.endswith(suffix):
            return int(value[:-2]) * factor
    return int(value)
def millicores(value):
    value = str(value)
    return int(value[:-1]) if value.endswith("m") else int(float(value) * 1000)
fact("memory_limit", quantity(c["resources"]["limits"]["memory"]))
fact("cpu_limit_millicores", millicores(c["resources"]["limits"]["cpu"]))

# Ports: informational with hostNetwork; podman 4.3 would publish them and refuse.
ports = {p["name"]: p["containerPort"] for p in c.pop("ports")}
# Probes: the test performs the kubelet's httpGet itself.
for probe in ("livenessProbe", "readinessProbe"):
    get = c.pop(probe)["httpGet"]
    port = get["port"]
    fact(probe + "_path", get["path"])
    fact(probe + "_port", ports[port] if isinstance(port, str) else port)

# NODE_NAME from the downward API: a literal node name.
env = [e for e in c["env"] if e["name"] == "NODE_NAME"]
assert len(env) == 1 and env[0]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName", env
del env[0]["valueFrom"]
env[0]["value"] = node
fact("node_name", node)
fact("env", " ".join(f'{e["name"]}={e["value"]}' for e in c["env"] if "value" in e))

# seccompProfile: podman reads only the annotation.
annotations = {}
profile = sc.get("seccompProfile")
if profile:
    value = {"Unconfined": "unconfined", "RuntimeDefault": "runtime/default"}[profile["type"]]
    annotations["container.seccomp.security.alpha.kubernetes.io/" + c["name"]] = value

# Volumes: the ConfigMap renamed and given the test configuration; emptyDirs renamed.
mounts = {m["name"]: m for m in c["volumeMounts"]}
for volume in spec["volumes"]:
    mount = mounts[volume["name"]]
    if "configMap" in volume:
        assert volume["configMap"]["name"] == cm["metadata"]["name"]
        items = volume["configMap"]["items"]
        assert len(items) == 1
        fact("config_dir", mount["mountPath"])
        fact("config_file", mount["mountPath"] + "/" + items[0]["path"])
        fact("config_read_only", mount.get("readOnly", False))
        cm["metadata"]["name"] = cm_name
        volume["configMap"]["name"] = cm_name
        cm["data"] = {items[0]["key"]: open(config_path).read()}
    elif "hostPath" in volume:
        fact("host_path", volume["hostPath"]["path"])
        fact("host_path_mount", mount["mountPath"])
        fact("host_path_propagation", mount.get("mountPropagation", "None"))
    elif "emptyDir" in volume:
        name = volume["name"] + "-" + suffix
        volume["name"] = name
        mount["name"] = name
        fact("empty_dir", mount["mountPath"])
        fact("empty_dir_volume", name)

metadata = {"name": pod, "labels": template["metadata"]["labels"]}
if annotations:
    metadata["annotations"] = annotations
manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
with open(out, "w") as f:
    yaml.safe_dump_all([cm, manifest], f, sort_keys=False)
for key, value in facts.items():
    print(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
"#;

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(unique_name("mirror-image-"));
        fs::create_dir_all(&path).expect("creating a temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// podman with this test's containers.conf.
fn podman(conf: &Path) -> Command {
    let mut command = Command::new("podman");
    command.env("CONTAINERS_CONF", conf);
    command
}

/// podman inside `ns`'s network namespace only (`nsenter --net`; see the module documentation),
/// stopped after two minutes at most.
fn podman_in(ns: &NetNs, conf: &Path) -> Command {
    let mut command = Command::new("timeout");
    command
        .args(["120", "nsenter"])
        .arg(format!("--net=/var/run/netns/{}", ns.name))
        .arg("podman")
        .env("CONTAINERS_CONF", conf);
    command
}

/// The played pod: `podman kube down`, `pod rm` and its volumes removed on drop, also when the
/// test fails (declared after the namespaces, so dropped before them).
struct PlayedPod {
    manifest: PathBuf,
    name: String,
    volumes: Vec<String>,
    conf: PathBuf,
    extra_containers: Vec<String>,
}

impl Drop for PlayedPod {
    fn drop(&mut self) {
        for container in &self.extra_containers {
            let _ = podman(&self.conf).args(["rm", "-f", container]).output();
        }
        let _ = podman(&self.conf)
            .args(["kube", "down"])
            .arg(&self.manifest)
            .output();
        let _ = podman(&self.conf)
            .args(["pod", "rm", "-f", &self.name])
            .output();
        for volume in &self.volumes {
            let _ = podman(&self.conf)
                .args(["volume", "rm", "-f", volume])
                .output();
        }
    }
}

/// `curl` inside `ns`: (HTTP status, body); status 0 when nothing answered.
fn curl(ns: &NetNs, url: &str) -> (u16, String) {
    let output = ns
        .command("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}", url])
        .output()
        .expect("running curl");
    let body = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = body.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Capability numbers (linux/capability.h) of the names the manifest adds.
fn capability_mask(names: &str) -> u64 {
    names
        .split(',')
        .filter(|name| !name.is_empty())
        .map(|name| match name {
            "NET_ADMIN" => 12,
            "SYS_ADMIN" => 21,
            "SYS_RESOURCE" => 24,
            "PERFMON" => 38,
            "BPF" => 39,
            other => panic!("capability {other}: add its number here"),
        })
        .fold(0, |mask, bit| mask | (1u64 << bit))
}

fn proc_status(pid: u32) -> BTreeMap<String, String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc/PID/status")
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.to_owned(), value.trim().to_owned()))
        .collect()
}

/// The current hard limit of a resource.
fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut limit) }, 0);
    limit.rlim_max
}

#[test]
fn image_runs_the_daemonset_pod() {
    let test = "image_runs_the_daemonset_pod";
    if !privileged(test) || !tools(test) {
        return;
    }
    let started = Instant::now();

    // (a) The image, through the xtask step (cached root file system). Under `cargo xtask
    // test` it holds the debug binary that run already built (MIRROR_BIN): a release build
    // would add minutes to every CI run for the same manifest and runtime checks.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let build = Instant::now();
    let mut xtask = Command::new(&cargo);
    xtask.args(["xtask", "image"]);
    if let Some(binary) = std::env::var_os("MIRROR_BIN") {
        xtask.arg("--binary").arg(binary);
    }
    let output = xtask
        .current_dir(repo())
        .output()
        .expect("running cargo xtask image");
    let log = text(&output);
    assert!(output.status.success(), "cargo xtask image failed:\n{log}");
    let built = log
        .lines()
        .rev()
        .find(|line| line.starts_with("image: ") && line.contains(" built in "))
        .unwrap_or_else(|| panic!("no `built in` line from cargo xtask image:\n{log}"))
        .to_owned();
    eprintln!(
        "{built} ({:.1} s with cargo)",
        build.elapsed().as_secs_f64()
    );

    // (b) The pod manifest and the machine's containers.conf.
    let dir = TempDir::new();
    let setup = mirror_tests::mirroring::setup();
    let (topology, shadow) = (&setup.topology, &setup.shadow);
    let run = unique_name("");
    let pod_name = format!("mirror-e2e-{run}");
    let configmap = format!("mirror-config-{run}");
    let config = format!(
        "[capture]\ninterfaces = [\"{}\"]\n\n[metrics]\nlisten = \"0.0.0.0:9477\"\n\n\
         [[target]]\nname = \"search\"\nport = {PORT}\nshadow = \"http://{CLIENT_ADDR}:{PORT}\"\n\
         sample_percent = 100.0\n",
        topology.server_if
    );
    let config_path = dir.0.join("mirror.toml");
    fs::write(&config_path, &config).unwrap();
    let manifest = dir.0.join("pod.yaml");
    let node = "image-e2e-node";
    let facts: BTreeMap<String, String> = check(
        Command::new("python3")
            .args(["-c", TO_POD])
            .arg(repo().join("deploy/kubernetes/daemonset.yaml"))
            .arg(repo().join("deploy/kubernetes/configmap.yaml"))
            .args([&pod_name, &configmap])
            .arg(&config_path)
            .args([node, &run])
            .arg(&manifest),
    )
    .lines()
    .filter_map(|line| line.split_once('='))
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    let fact = |key: &str| -> &str {
        facts
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no fact {key}: {facts:?}"))
    };
    assert!(
        built.contains(fact("image")),
        "xtask tagged {built}, the pod uses {}",
        fact("image")
    );
    assert_eq!(fact("host_network"), "true");
    assert_eq!(
        fact("privileged"),
        "false",
        "the default DaemonSet is not privileged"
    );
    let metrics_port = fact("readinessProbe_port");
    assert_eq!(
        metrics_port, "9477",
        "the test configuration listens on 9477"
    );
    let pid_max: u64 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("pid_max")
        .trim()
        .parse()
        .expect("pid_max number");
    let nofile = hard_limit(libc::RLIMIT_NOFILE);
    // podman lowers its own RLIMIT_NPROC to pid_max when it starts.
    let nproc = hard_limit(libc::RLIMIT_NPROC).min(pid_max);
    let conf = dir.0.join("containers.conf");
    fs::write(
        &conf,
        format!(
            "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \
             \"nproc={nproc}:{nproc}\"]\n\n[engine]\nruntime = \"runc\"\n"
        ),
    )
    .unwrap();

    let mut pod = PlayedPod {
        manifest: manifest.clone(),
        name: pod_name.clone(),
        volumes: vec![configmap.clone(), fact("empty_dir_volume").to_owned()],
        conf: conf.clone(),
        extra_containers: Vec::new(),
    };

    // Why seccompProfile: Unconfined: under this runtime's default profile the same
    // capabilities cannot create the classifier's maps.
    let probe_name = format!("mirror-seccomp-{run}");
    pod.extra_containers.push(probe_name.clone());
    let output = podman_in(&topology.server, &conf)
        .args(["run", "--rm", "--name", &probe_name, "--network", "host"])
        .args(["--cap-drop", "ALL", "--cap-add", fact("caps_add")])
        .args(["--security-opt", "no-new-privileges", "--read-only"])
        .args(["--stop-timeout", "1", fact("image")])
        .args([
            "capture",
            "--interface",
            &topology.server_if,
            "--port",
            "9",
            "--count",
            "1",
        ])
        .output()
        .expect("podman run");
    let refused = text(&output);
    assert!(
        !output.status.success() && refused.contains("Operation not permitted"),
        "under the runtime's default seccomp profile the classifier loaded (seccompProfile: \
         Unconfined may no longer be needed with this runtime):\n{refused}"
    );

    // (c) kube play inside the server namespace.
    let played = podman_in(&topology.server, &conf)
        .args(["kube", "play"])
        .arg(&manifest)
        .output()
        .expect("podman kube play");
    assert!(
        played.status.success(),
        "podman kube play:\n{}\n{}",
        text(&played),
        fs::read_to_string(&manifest).unwrap_or_default()
    );
    let container = format!("{pod_name}-{}", fact("container"));
    let logs = || {
        text(
            &podman(&conf)
                .args(["logs", &container])
                .output()
                .expect("podman logs"),
        )
    };

    // The kubelet's probes: GET <path> on the probe's port, from the pod's network.
    let deadline = Instant::now() + Duration::from_secs(30);
    for probe in ["readinessProbe", "livenessProbe"] {
        let url = format!(
            "http://127.0.0.1:{}{}",
            fact(&format!("{probe}_port")),
            fact(&format!("{probe}_path"))
        );
        loop {
            let (status, _) = curl(&topology.server, &url);
            if status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{probe} {url} answers {status}; the daemon logged:\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // What the runtime made of the manifest.
    let inspect = |format: &str| -> String {
        check(podman(&conf).args(["inspect", "--format", format, &container]))
            .trim()
            .to_owned()
    };
    let pid: u32 = inspect("{{.State.Pid}}").parse().expect("container pid");
    assert_eq!(inspect("{{.ImageName}}"), fact("image"));
    // hostNetwork: the daemon is in the namespace podman was started in.
    let netns_inode = fs::metadata(format!("/var/run/netns/{}", topology.server.name))
        .expect("netns file")
        .ino();
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/ns/net")).expect("ns/net link"),
        PathBuf::from(format!("net:[{netns_inode}]")),
        "hostNetwork: the pod must share the namespace it was played in"
    );
    // Capabilities: exactly the added ones, everything else dropped.
    assert_eq!(fact("caps_drop"), "ALL");
    let status = proc_status(pid);
    let expected = capability_mask(fact("caps_add"));
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let mask = u64::from_str_radix(&status[set], 16).expect("capability mask");
        assert_eq!(
            mask,
            expected,
            "{set} {mask:#x}, the manifest adds {} ({expected:#x})",
            fact("caps_add")
        );
    }
    assert_eq!(status["CapAmb"], "0000000000000000");
    assert_eq!(
        status["Uid"].split_whitespace().next(),
        Some(fact("run_as_user"))
    );
    let no_new_privs = if fact("allow_privilege_escalation") == "false" {
        "1"
    } else {
        "0"
    };
    assert_eq!(status["NoNewPrivs"], no_new_privs);
    if fact("seccomp") == "Unconfined" {
        assert_eq!(status["Seccomp"], "0", "seccompProfile Unconfined");
    }
    // Environment, with the node name the downward API would give.
    let environ = fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let environ: Vec<String> = environ
        .split(|byte| *byte == 0)
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect();
    for pair in fact("env").split(' ') {
        assert!(
            environ.iter().any(|e| e == pair),
            "{pair} not in {environ:?}"
        );
    }
    assert!(environ.contains(&format!("NODE_NAME={}", fact("node_name"))));
    // Mounts: read-only root, the ConfigMap read-only at its path with the test configuration,
    // the host's bpffs directory with HostToContainer (rslave) propagation.
    let mountinfo = fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let mount = |path: &str| -> Vec<String> {
        mountinfo
            .lines()
            .find(|line| line.split(' ').nth(4) == Some(path))
            .unwrap_or_else(|| panic!("nothing mounted at {path}:\n{mountinfo}"))
            .split(' ')
            .map(str::to_owned)
            .collect()
    };
    let read_only = |fields: &[String]| fields[5].split(',').any(|option| option == "ro");
    assert_eq!(read_only(&mount("/")), fact("read_only_root") == "true");
    assert_eq!(
        read_only(&mount(fact("config_dir"))),
        fact("config_read_only") == "true"
    );
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let inside = |path: &str| root.join(path.trim_start_matches('/'));
    assert_eq!(
        fs::read_to_string(inside(fact("config_file"))).expect("config in the container"),
        config
    );
    mount(fact("host_path_mount"));
    let host = fs::metadata(fact("host_path")).expect("host path");
    let seen = fs::metadata(inside(fact("host_path_mount"))).expect("host path in the container");
    assert_eq!(
        (host.dev(), host.ino()),
        (seen.dev(), seen.ino()),
        "hostPath bind"
    );
    let mounts = inspect("{{range .Mounts}}{{.Destination}} {{.Type}} {{.Propagation}}\n{{end}}");
    let propagation = match fact("host_path_propagation") {
        "HostToContainer" => "rslave",
        "Bidirectional" => "rshared",
        _ => "rprivate",
    };
    assert!(
        mounts
            .lines()
            .any(|line| line == format!("{} bind {propagation}", fact("host_path_mount"))),
        "{} propagation: {mounts}",
        fact("host_path_mount")
    );
    mount(fact("empty_dir"));
    // Resources: the limits as a cgroup would enforce them.
    assert_eq!(inspect("{{.HostConfig.Memory}}"), fact("memory_limit"));
    let quota: u64 = inspect("{{.HostConfig.CpuQuota}}").parse().unwrap();
    let period: u64 = inspect("{{.HostConfig.CpuPeriod}}").parse().unwrap();
    assert_eq!(
        (quota * 1000 / period).to_string(),
        fact("cpu_limit_millicores")
    );

    // (d) Traffic from the client namespace to the primary; the replays reach the shadow.
    let requests = 5;
    for index in 0..requests {
        let request = format!(
            "GET /image-e2e/{index} HTTP/1.1\r\nHost: search:{PORT}\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            send(&topology.client, vec![request.into_bytes()], false),
            [200]
        );
    }
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let (status, body) = curl(&topology.server, &metrics_url);
        assert_eq!(status, 200, "/metrics: {body}");
        let metrics = Metrics::parse(&body);
        if metrics.sum("mirror_replays_total", &["outcome=\"ok\""]) >= f64::from(requests) {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "no {requests} replays in 20 s: {:#?}\n{}",
            metrics.samples,
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        metrics.sum("mirror_requests_total", &["target=\"search\""]),
        f64::from(requests)
    );
    assert_eq!(
        metrics.sum("mirror_replays_total", &[]),
        f64::from(requests)
    );

    // (e) The pod's stop (SIGTERM, as the kubelet sends it): the daemon exits cleanly.
    check(podman(&conf).args(["pod", "stop", "-t", "30", &pod_name]));
    assert_eq!(
        inspect("{{.State.ExitCode}}"),
        "0",
        "daemon exit:\n{}",
        logs()
    );
    check(podman(&conf).args(["kube", "down"]).arg(&manifest));
    for volume in &pod.volumes {
        check(podman(&conf).args(["volume", "rm", "-f", volume]));
    }
    pod.extra_containers.clear();
    drop(pod);

    // The replay connections are closed now: the shadow saved them.
    shadow.settle(Duration::from_millis(500), Duration::from_secs(10));
    let replayed: String = shadow
        .recordings()
        .values()
        .map(|recording| String::from_utf8_lossy(&recording.request).into_owned())
        .collect();
    for index in 0..requests {
        assert!(
            replayed.contains(&format!("GET /image-e2e/{index} HTTP/1.1\r\n")),
            "the shadow did not get request {index}:\n{replayed}"
        );
    }
    assert_eq!(
        replayed.matches("Host: search-shadow:8080\r\n").count(),
        requests as usize,
        "Host rewritten with the default suffix:-shadow:\n{replayed}"
    );
    eprintln!("{test}: passed in {:.1} s", started.elapsed().as_secs_f64());
}
