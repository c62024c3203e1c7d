"""The deployment files under envoy/: every YAML parses, the files agree with each other and with the service.

No cluster and no Docker engine exist here, so Kubernetes, Istio and Docker files are checked by what can be
checked without one: they parse, every name they reference exists, the Check service is port 9191 wherever it
is referenced, the probes ask for the health service name the server registers, and each workload's
authz-ledger configuration -- its ConfigMap and Secret files laid out as the pod would see them, its environment
resolved -- loads through authz_ledger.config and actually serves: a Check, and every probe run against it. Envoy
bootstraps are loaded into Envoy's own protos and by ``envoy --mode validate``; they are run for real in
test_envoy_e2e.py, test_quickstart.py and test_scale_out.py.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz_ledger import config, server
from authz_ledger.config import EXAMPLE_POLICY
from authz_ledger.errors import NoteError
from authz_ledger.policy import bundle
from authz_ledger.tlog import note
from tests.conftest import free_port
from tests.support.envoy_harness import (
    AUTHZ_CLUSTER,
    ENVOY_DIR,
    authz_endpoints,
    is_bootstrap,
    load_bootstrap,
    validate,
)

pytestmark = pytest.mark.timeout(60)

CHECK_PORT = 9191
K8S_DIR = ENVOY_DIR / "kubernetes"
ISTIO_DIR = ENVOY_DIR / "istio"
DOCKERFILE = ENVOY_DIR / "Dockerfile"
CONTAINER_CONFIG = ENVOY_DIR / "container-config.yaml"
ALL_YAML = sorted(ENVOY_DIR.rglob("*.yaml"))
BOOTSTRAPS = [p for p in ALL_YAML if p.parent == ENVOY_DIR and is_bootstrap(yaml.safe_load(p.read_text()))]
# The largest CheckRequest Envoy may send is the body limit plus headers; the service must accept it.
HEADERS_ALLOWANCE = 64 * 1024


def rel(path: Path) -> str:
    return str(path.relative_to(ENVOY_DIR))


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def resources(directory: Path) -> list[dict[str, Any]]:
    return [doc for path in sorted(directory.glob("*.yaml")) for doc in load_all(path)]


def find(docs: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in docs
        if d["kind"] == kind
        and d["metadata"]["name"] == name
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]
    assert len(found) == 1, f"{kind} {namespace}/{name}: {len(found)} definitions"
    return found[0]


K8S = resources(K8S_DIR)
ISTIO = resources(ISTIO_DIR)
WORKLOADS = [d for d in K8S if d["kind"] in ("Deployment", "StatefulSet")]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def authz_container(workload: dict[str, Any]) -> dict[str, Any]:
    [c] = [c for c in pod_spec(workload)["containers"] if c["name"] == "authz-ledger"]
    return c


def all_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- the Dockerfile -------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instruction, _, args = (pending + line).partition(" ")
        out.append((instruction.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continuation line"
    return out


def image_entrypoint() -> list[str]:
    [entrypoint] = [args for instr, args in dockerfile_instructions() if instr == "ENTRYPOINT"]
    argv = json.loads(entrypoint)  # exec form: signals reach authz-ledger itself, not a shell
    assert isinstance(argv, list)
    return argv


def image_config_path() -> str:
    argv = image_entrypoint()
    return argv[argv.index("--config") + 1]


def test_dockerfile_has_the_essentials() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    [user] = [args for instr, args in instructions if instr == "USER"]
    assert user.split(":")[0] not in ("root", "0"), user
    # Every Kubernetes manifest runs as the image's user.
    for workload in WORKLOADS:
        assert str(pod_spec(workload)["securityContext"]["runAsUser"]) == user.split(":")[0]
    assert image_entrypoint()[:3] == ["authz-ledger", "serve", "--config"]
    copies = [args.split() for instr, args in instructions if instr == "COPY"]
    assert ["envoy/container-config.yaml", image_config_path()] in copies
    cfg = config.load(str(CONTAINER_CONFIG), environ={})
    [volume] = [json.loads(args) for instr, args in instructions if instr == "VOLUME"]
    assert volume == [cfg.ledger.data_dir]
    exposed = {int(p.split("/")[0]) for instr, args in instructions if instr == "EXPOSE" for p in args.split()}
    assert CHECK_PORT in exposed
    assert cfg.server.addr == f":{CHECK_PORT}"  # a container must listen beyond its own loopback
    assert cfg.metrics.addr.startswith("127.0.0.1:") and cfg.audit.addr.startswith("127.0.0.1:")


def test_the_dockerfile_build_context_builds_the_project(tmp_path: Path) -> None:
    """Its COPY sources (what Dockerfile.dockerignore lets through) are enough for ``pip install .``."""
    context = tmp_path / "context"
    for instr, args in dockerfile_instructions():
        if instr == "COPY":
            *sources, _dest = args.split()
            for src in sources:
                target = context / src
                target.parent.mkdir(parents=True, exist_ok=True)
                if (ENVOY_DIR.parent / src).is_dir():
                    shutil.copytree(ENVOY_DIR.parent / src, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(ENVOY_DIR.parent / src, target)
    ignored = (ENVOY_DIR / "Dockerfile.dockerignore").read_text().split()
    assert "*" in ignored  # everything else stays out of the context
    for instr, args in dockerfile_instructions():
        if instr == "COPY":
            assert all(f"!{src.rstrip('/')}" in {i.rstrip("/") for i in ignored} for src in args.split()[:-1])
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=context, capture_output=True, text=True, timeout=50, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    [wheel] = tmp_path.glob("authz_ledger-*.whl")
    names = subprocess.run(
        [sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True, text=True, check=True
    ).stdout
    assert "authz_ledger/example_policy/policy.rego" in names and "entry_points.txt" in names


# --- every YAML ---------------------------------------------------------------------------------------------------


def test_the_expected_deployment_files_exist() -> None:
    expected = {
        "envoy.yaml", "envoy-two-replicas.yaml", "container-config.yaml",
        "istio/mesh-config.yaml", "istio/authorization-policy.yaml", "istio/service-entry.yaml",
        "kubernetes/deployment-sidecar.yaml", "kubernetes/deployment-standalone.yaml", "kubernetes/service.yaml",
        "kubernetes/pvc.yaml", "kubernetes/secret.yaml", "kubernetes/configmap.yaml",
        "kubernetes/networkpolicy.yaml", "istio/peer-authentication.yaml",
    }  # fmt: skip
    assert expected <= {rel(p) for p in ALL_YAML}
    assert {rel(p) for p in BOOTSTRAPS} >= {"envoy.yaml", "envoy-two-replicas.yaml"}


@pytest.mark.parametrize("path", ALL_YAML, ids=rel)
def test_every_yaml_file_parses(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict)
        if path.parent in (K8S_DIR, ISTIO_DIR):
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc.keys()
            assert doc["metadata"]["name"]


# --- Envoy bootstraps -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BOOTSTRAPS, ids=rel)
def test_envoy_bootstrap_loads_into_envoys_protos_and_matches_the_service(path: Path) -> None:
    bootstrap = load_bootstrap(path)
    clusters = {c.name: c for c in bootstrap.static_resources.clusters}
    for listener in bootstrap.static_resources.listeners:
        for chain in listener.filter_chains:
            for f in chain.filters:
                hcm = http_connection_manager_pb2.HttpConnectionManager()
                assert f.typed_config.Unpack(hcm)
                [access_log] = hcm.access_log
                stdout_log = stream_pb2.StdoutAccessLog()
                assert access_log.typed_config.Unpack(stdout_log)
                assert "decision_id" in stdout_log.log_format.json_format.fields
                [authz_filter] = [h for h in hcm.http_filters if h.name == "envoy.filters.http.ext_authz"]
                authz = ext_authz_pb2.ExtAuthz()
                assert authz_filter.typed_config.Unpack(authz)
                assert authz.grpc_service.envoy_grpc.cluster_name == AUTHZ_CLUSTER in clusters
                assert not authz.failure_mode_allow
                assert authz.grpc_service.HasField("timeout")
                assert (
                    authz.with_request_body.max_request_bytes + HEADERS_ALLOWANCE
                    <= config.Config().server.max_recv_msg_size
                )
    cluster = clusters[AUTHZ_CLUSTER]
    options = http_protocol_options_pb2.HttpProtocolOptions()
    assert cluster.typed_extension_protocol_options[options.DESCRIPTOR.full_name].Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")
    [hc] = cluster.health_checks
    assert hc.grpc_health_check.service_name == server.AUTHORIZATION_SERVICE
    ports = [a["port_value"] for a in authz_endpoints(yaml.safe_load(path.read_text()))]
    assert ports[0] == CHECK_PORT  # the first (or only) replica on the service's default port
    assert len(set(ports)) == len(ports)
    if path.name == "envoy-two-replicas.yaml":
        assert len(ports) == 2 and cluster.lb_policy == cluster.ROUND_ROBIN


@pytest.mark.parametrize("path", BOOTSTRAPS, ids=rel)
def test_envoy_validate_mode_accepts_the_bootstrap(path: Path) -> None:
    proc = validate(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"configuration '{path}' OK" in proc.stdout + proc.stderr


# --- Kubernetes: names and ports ----------------------------------------------------------------------------------


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w["metadata"]["name"])
def test_workload_references_exist(workload: dict[str, Any]) -> None:
    namespace = workload["metadata"]["namespace"]
    spec = pod_spec(workload)
    assert labels_match(workload["spec"]["selector"]["matchLabels"], workload["spec"]["template"]["metadata"]["labels"])
    templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for v in volumes.values():
        if "persistentVolumeClaim" in v:
            find(K8S, "PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"], namespace)
        if "configMap" in v:
            data = find(K8S, "ConfigMap", v["configMap"]["name"], namespace)["data"]
            assert {i["key"] for i in v["configMap"].get("items", [])} <= data.keys()
        if "secret" in v:
            find(K8S, "Secret", v["secret"]["secretName"], namespace)
    for c in all_containers(workload):
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes or m["name"] in templates, m
        # Requests and limits on every container, so the scheduler and the OOM killer know what to expect.
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= c["resources"][section].keys(), (c["name"], section)
    if workload["kind"] == "Deployment":
        # One ledger shard per volume: never two pods writing it, not even during a rollout.
        assert workload["spec"]["replicas"] == 1 and workload["spec"]["strategy"]["type"] == "Recreate"


def test_the_service_reaches_the_standalone_check_port() -> None:
    svc = find(K8S, "Service", "authz-ledger", "authz-ledger")
    [port] = svc["spec"]["ports"]
    assert port["port"] == CHECK_PORT and port["appProtocol"] == "grpc" and port["name"].startswith("grpc")
    [workload] = [
        w for w in WORKLOADS if labels_match(svc["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
    ]
    assert workload["metadata"]["name"] == "authz-ledger"
    [container_port] = [p for p in authz_container(workload)["ports"] if p["name"] == port["targetPort"]]
    assert container_port["containerPort"] == CHECK_PORT


def test_the_secret_is_a_placeholder_for_the_standalone_origin() -> None:
    secret = find(K8S, "Secret", "authz-ledger-signing-key")
    placeholder = secret["stringData"]["signing.key"]
    with pytest.raises(NoteError):  # applied unchanged, authz-ledger refuses to start; no real key is published
        note.Signer.from_private_key_string(placeholder)
    origin = secret["metadata"]["annotations"]["authz-ledger/origin"]
    standalone = yaml.safe_load(find(K8S, "ConfigMap", "authz-ledger")["data"]["standalone.yaml"])
    assert standalone["ledger"]["origin"] == origin  # keygen --origin must name the ledger's origin
    assert f"authz-ledger keygen --origin {origin} --out signing.key" in (K8S_DIR / "secret.yaml").read_text()


def test_the_configmap_policy_is_the_example_policy() -> None:
    data = find(K8S, "ConfigMap", "authz-ledger")["data"]
    assert data["policy.rego"] == (EXAMPLE_POLICY / "policy.rego").read_text(), "copy the example policy verbatim"
    assert json.loads(data["data.json"]) == json.loads((EXAMPLE_POLICY / "data.json").read_text())


# --- Kubernetes: each workload's authz-ledger, as its pod would run it ---------------------------------------------


@dataclass
class Pod:
    """A workload's authz-ledger container on this machine: its files under ``root``, its environment resolved."""

    workload: dict[str, Any]
    root: Path
    environ: dict[str, str]

    @property
    def container(self) -> dict[str, Any]:
        return authz_container(self.workload)

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    def rebase(self, value: Any) -> Any:
        """Absolute container paths in a configuration value -> the same paths under ``root``."""
        if isinstance(value, str) and value.startswith("/"):
            return str(self.path(value))
        if isinstance(value, list):
            return [self.rebase(v) for v in value]
        if isinstance(value, dict):
            return {k: self.rebase(v) for k, v in value.items()}
        return value

    def load_config(self, *sets: str) -> config.Config:
        """The image's ENTRYPOINT reading what is mounted at its --config path, with the container's environment."""
        config_file = self.path(image_config_path())
        assert config_file.is_file(), f"nothing mounted at {image_config_path()}"
        rebased = self.root / "rebased-config.yaml"
        rebased.write_text(yaml.safe_dump(self.rebase(yaml.safe_load(config_file.read_text()))))
        env = {k: str(self.rebase(v)) for k, v in self.environ.items() if k.startswith(config.ENV_PREFIX)}
        return config.load(str(rebased), sets=list(sets), environ=env)


def materialize(workload: dict[str, Any], root: Path, pod_name: str) -> Pod:
    """Lay out the authz-ledger container's mounts under ``root`` and resolve its environment (``$(VAR)`` too)."""
    namespace = workload["metadata"]["namespace"]
    volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
    for t in workload["spec"].get("volumeClaimTemplates", []):
        volumes[t["metadata"]["name"]] = {"name": t["metadata"]["name"], "persistentVolumeClaim": {}}
    container = authz_container(workload)
    for mount in container["volumeMounts"]:
        target = root / mount["mountPath"].lstrip("/")
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = find(K8S, "ConfigMap", volume["configMap"]["name"], namespace)["data"]
            items = {i["path"]: i["key"] for i in volume["configMap"]["items"]}
            files = {mount["subPath"]: target} if "subPath" in mount else {p: target / p for p in items}
            for item_path, file in files.items():
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_text(data[items[item_path]])
        else:
            target.mkdir(parents=True, exist_ok=True)
    environ: dict[str, str] = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, var
            environ[var["name"]] = pod_name
        else:
            environ[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: environ[m.group(1)], var["value"])
    return Pod(workload, root, environ)


def run_init_containers(pod: Pod, tmp_path: Path) -> None:
    """Create the Secret's key as secret.yaml says, then run each init container's command on the rebased paths."""
    namespace = pod.workload["metadata"]["namespace"]
    volumes = {v["name"]: v for v in pod_spec(pod.workload)["volumes"]}
    for init in pod_spec(pod.workload).get("initContainers", []):
        for mount in init["volumeMounts"]:
            target = pod.path(mount["mountPath"])
            target.mkdir(parents=True, exist_ok=True)
            if "secret" in volumes[mount["name"]]:
                secret = find(K8S, "Secret", volumes[mount["name"]]["secret"]["secretName"], namespace)
                origin = secret["metadata"]["annotations"]["authz-ledger/origin"]
                [key_name] = secret["stringData"]
                key = tmp_path / "secret" / key_name
                keygen = [sys.executable, "-m", "authz_ledger.cli", "keygen", "--origin", origin, "--out", str(key)]
                subprocess.run(keygen, check=True, capture_output=True, timeout=30)
                shutil.copy(key, target / key_name)
                (target / key_name).chmod(0o440)  # as kubelet mounts it with defaultMode 0440 and fsGroup
        proc = subprocess.run(pod.rebase(init["command"]), capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0, f"init container {init['name']}: {proc.stderr}"


def probes(container: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert name in container, f"{container['name']} has no {name}"
        yield name, container[name]


def health_status(port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


def run_exec_probe(probe: dict[str, Any], port: int) -> subprocess.CompletedProcess[str]:
    argv = [a.replace(f"127.0.0.1:{CHECK_PORT}", f"127.0.0.1:{port}") for a in probe["exec"]["command"]]
    assert argv[0] == "python", "the image's python runs the probe"
    return subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=30, check=False)


def alice_is_allowed(port: int) -> bool:
    request = json_format.ParseDict(
        {"attributes": {"request": {"http": {"method": "GET", "path": "/api/items", "headers": {"x-user": "alice"}}}}},
        external_auth_pb2.CheckRequest(),
    )
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=10)
    return bool(reply.status.code == 0)


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w["metadata"]["name"])
def test_workload_config_loads_serves_and_its_probes_answer(workload: dict[str, Any], tmp_path: Path) -> None:
    pod_name = f"{workload['metadata']['name']}-0"
    pod = materialize(workload, tmp_path / "pod", pod_name)
    run_init_containers(pod, tmp_path)
    cfg = pod.load_config()
    container = pod.container
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}

    # Where things are: the policy is the ConfigMap's, the ledger is on a persistent volume.
    assert cfg.policy.engine == "embedded"
    assert sorted(p.name for p in Path(cfg.policy.source).iterdir()) == ["data.json", "policy.rego"]
    [data_mount] = [m for m in mounts.values() if str(pod.path(m["mountPath"])) == cfg.ledger.data_dir]
    assert "persistentVolumeClaim" in volumes.get(data_mount["name"], {}) or any(
        t["metadata"]["name"] == data_mount["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
    )
    # Check listener: every interface for a standalone service, loopback for a sidecar; side listeners loopback.
    sidecar = len(pod_spec(workload)["containers"]) > 1
    assert cfg.server.addr == (f"127.0.0.1:{CHECK_PORT}" if sidecar else f":{CHECK_PORT}")
    assert cfg.audit.addr.startswith("127.0.0.1:") and cfg.metrics.addr.startswith("127.0.0.1:")
    if sidecar:
        assert "ports" not in container
    else:
        assert {p["containerPort"] for p in container["ports"]} == {CHECK_PORT}
    if workload["kind"] == "StatefulSet":  # one shard per pod: its own origin, its own key on its own volume
        assert cfg.ledger.origin == f"authz-ledger.example/{pod_name}"
        assert cfg.ledger.signing_keys == []

    # It serves: same configuration, only the listeners moved to free local ports.
    port = free_port()
    running = server.start(
        pod.load_config(
            f"server.addr=127.0.0.1:{port}", "metrics.addr=127.0.0.1:0", "audit.addr=127.0.0.1:0",
            "server.drain_seconds=0", "server.grace_seconds=1", "policy.embedded.workers=1",
        )
    )  # fmt: skip
    exec_probes = []
    try:
        assert running.ledger is not None and running.ledger.signers[0].name == cfg.ledger.origin
        assert alice_is_allowed(port)
        for name, probe in probes(container):
            if "grpc" in probe:  # what kubelet asks: grpc.health.v1 Check on the pod IP
                assert not sidecar, f"{name}: kubelet's grpc probe cannot reach a loopback listener"
                assert probe["grpc"] == {"port": CHECK_PORT, "service": server.AUTHORIZATION_SERVICE}
                assert health_status(port, probe["grpc"]["service"]) == health_pb2.HealthCheckResponse.SERVING
            else:
                command = " ".join(probe["exec"]["command"])
                assert server.AUTHORIZATION_SERVICE in command and f"127.0.0.1:{CHECK_PORT}" in command
                proc = run_exec_probe(probe, port)
                assert proc.returncode == 0, f"{name}: {proc.stderr}"
                exec_probes.append(probe)
    finally:
        running.stop()
    for probe in exec_probes:  # and they fail once it is gone
        assert run_exec_probe(probe, port).returncode != 0


# --- Istio ------------------------------------------------------------------------------------------------------


def providers() -> dict[str, dict[str, Any]]:
    [mesh] = [d for d in ISTIO if d["kind"] == "IstioOperator"]
    return {p["name"]: p["envoyExtAuthzGrpc"] for p in mesh["spec"]["meshConfig"]["extensionProviders"]}


def test_mesh_config_providers_fail_closed_on_the_check_port() -> None:
    assert set(providers()) == {"authz-ledger-local", "authz-ledger"}
    for name, p in providers().items():
        assert p["port"] == CHECK_PORT, name
        assert re.fullmatch(r"\d+(\.\d+)?(ms|s)", p["timeout"]), name  # Istio's default would be 600 s
        assert p["failOpen"] is False and 500 <= int(p["statusOnError"]) <= 599
        body = p["includeRequestBodyInCheck"]
        assert body["maxRequestBytes"] + HEADERS_ALLOWANCE <= config.Config().server.max_recv_msg_size
    [mesh] = [d for d in ISTIO if d["kind"] == "IstioOperator"]
    access_log_format = json.loads(mesh["spec"]["meshConfig"]["accessLogFormat"])
    assert access_log_format["decision_id"] == "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%"


def test_the_sidecar_provider_is_the_service_entry_to_the_pods_own_loopback() -> None:
    [entry] = [d for d in ISTIO if d["kind"] == "ServiceEntry"]
    assert entry["apiVersion"].startswith("networking.istio.io/")
    assert entry["spec"]["hosts"] == [providers()["authz-ledger-local"]["service"]]
    assert entry["spec"]["endpoints"] == [{"address": "127.0.0.1"}] and entry["spec"]["resolution"] == "STATIC"
    [port] = entry["spec"]["ports"]
    assert (port["number"], port["protocol"]) == (CHECK_PORT, "GRPC")
    sidecar = find(K8S, "Deployment", "my-app")
    assert entry["metadata"]["namespace"] == sidecar["metadata"]["namespace"]
    assert yaml.safe_load(find(K8S, "ConfigMap", "authz-ledger")["data"]["sidecar.yaml"])["server"]["addr"] == (
        f"127.0.0.1:{CHECK_PORT}"
    )


def test_the_standalone_provider_is_the_kubernetes_service() -> None:
    svc = find(K8S, "Service", "authz-ledger")
    fqdn = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
    assert providers()["authz-ledger"]["service"] == fqdn
    assert [p["port"] for p in svc["spec"]["ports"]] == [providers()["authz-ledger"]["port"]]


def test_authorization_policies_delegate_to_a_known_provider() -> None:
    policies = [d for d in ISTIO if d["kind"] == "AuthorizationPolicy" and d["spec"]["action"] == "CUSTOM"]
    assert policies
    used = set()
    for policy in policies:
        assert policy["apiVersion"] == "security.istio.io/v1"
        spec = policy["spec"]
        assert spec["action"] == "CUSTOM" and spec["provider"]["name"] in providers()
        assert spec["rules"] and all(rule.get("to") or rule.get("from") or rule.get("when") for rule in spec["rules"])
        used.add(spec["provider"]["name"])
    assert used == set(providers())
    # The sidecar policy selects the pods that have authz-ledger as a sidecar.
    sidecar = find(K8S, "Deployment", "my-app")
    [policy] = [p for p in policies if p["spec"]["provider"]["name"] == "authz-ledger-local"]
    assert policy["metadata"]["namespace"] == sidecar["metadata"]["namespace"]
    assert labels_match(policy["spec"]["selector"]["matchLabels"], sidecar["spec"]["template"]["metadata"]["labels"])


def _authz_ledger_pods() -> list[dict[str, Any]]:
    """The pod templates of the standalone and sharded authz-ledger workloads."""
    return [
        d["spec"]["template"]["metadata"]["labels"]
        for d in K8S
        if d["kind"] in ("Deployment", "StatefulSet")
        and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "authz-ledger"
    ]


def test_a_network_policy_admits_only_the_check_port_from_client_namespaces() -> None:
    policy = find(K8S, "NetworkPolicy", "authz-ledger-check-callers", "authz-ledger")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    pods = _authz_ledger_pods()
    assert len(pods) >= 2 and all(labels_match(spec["podSelector"]["matchLabels"], labels) for labels in pods)
    [rule] = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9191}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"authz-ledger/client": "true"}}}]


def test_istio_requires_mtls_and_admits_only_mesh_identities_on_the_check_port() -> None:
    peer = find(ISTIO, "PeerAuthentication", "authz-ledger-strict-mtls", "authz-ledger")
    assert peer["spec"]["mtls"]["mode"] == "STRICT"
    allow = find(ISTIO, "AuthorizationPolicy", "authz-ledger-only-mesh-proxies", "authz-ledger")
    assert allow["spec"]["action"] == "ALLOW"
    [rule] = allow["spec"]["rules"]
    assert rule["from"] == [{"source": {"principals": ["*"]}}]
    assert rule["to"] == [{"operation": {"ports": ["9191"]}}]
    for selector in (peer["spec"]["selector"], allow["spec"]["selector"]):
        assert all(labels_match(selector["matchLabels"], labels) for labels in _authz_ledger_pods())


# --- a known limitation, kept visible ------------------------------------------------------------------------------


def test_a_policy_directory_laid_out_as_kubelet_mounts_a_configmap_loads_each_file_once(tmp_path: Path) -> None:
    directory = tmp_path / "policy"
    timestamped = directory / "..2026_01_01_00_00_00.000000000"
    timestamped.mkdir(parents=True)
    for name in ("policy.rego", "data.json"):
        shutil.copy(EXAMPLE_POLICY / name, timestamped / name)
    (directory / "..data").symlink_to(timestamped.name)
    for name in ("policy.rego", "data.json"):
        (directory / name).symlink_to(f"..data/{name}")
    source = bundle.load_source(str(directory))
    assert sorted(source.data) == ["rbac"]
    assert len(source.modules) == 1


def test_quickstart_script_is_valid_bash() -> None:
    script = ENVOY_DIR / "quickstart.sh"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert shlex.split(script.read_text().splitlines()[0]) == ["#!/usr/bin/env", "bash"]
