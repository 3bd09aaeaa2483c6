"""Write the service as a Docker Compose file or Kubernetes manifests, with Jina's own export.

The exported topology is the one ``flows/crossmodal.yml`` describes (shards, replicas,
polling, the merger after the indexer shards): the YAML is read with the values a local
start would put into its environment, every executor and the gateway are pointed at the
project's image (``Dockerfile``), and Jina's ``Flow.to_docker_compose_yaml`` /
``Flow.to_kubernetes_yaml`` write the files. Jina leaves a few things undone, which are
patched into what it wrote:

- every container runs ``--uses config.yml`` (the Hub convention); one image serves all
  executors and the gateway, so each gets the path of its own config inside the image;
- one volume (compose) / PersistentVolumeClaim (k8s StatefulSet) per indexer shard and
  one for the gateway's users table; Jina would share one volume between shards (and, in
  k8s, turn the indexer's head into a StatefulSet that loses its merger);
- readiness probes (k8s), health check timings and start order (compose), no host port
  per executor (they would clash on one machine), the signing key from the environment
  at ``docker compose up`` or from a Secret, never a value in the files.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

from crossmodal.index.users import KEY_ENV
from crossmodal.settings import FLOW_YAML, OPS, ROOT, OpsSettings, ServiceConfig

FORMATS = ("compose", "k8s")
COMPOSE_FILE = "docker-compose.yml"
_ENV_REF = re.compile(r"\$\{\{\s*ENV\.(\w+)\s*\}\}")
_SHARD_OR_REPLICA = re.compile(r"(-\d+)?(/rep-\d+)?$")


def image_path(path: str, ops: OpsSettings = OPS) -> str:
    """A path of this repository as the image has it; anything else cannot be in the image."""
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(ROOT):
        raise ValueError(f"{path}: outside the repository {ROOT}, so not in the image; "
                         f"copy it under the repository (e.g. models/) and export again")
    return f"{ops.image_root}/{resolved.relative_to(ROOT).as_posix()}"


def container_env(cfg: ServiceConfig, spec, fmt: str, ops: OpsSettings = OPS) -> dict[str, str]:
    """The Flow environment of a local start, with container paths, hosts and no secret."""
    from crossmodal.serve.flow import flow_env

    env = flow_env(cfg, spec)
    pretrained = spec.pretrained
    if spec.checkpoint and Path(pretrained).exists():
        pretrained = image_path(pretrained, ops)
    env.update({
        "CROSSMODAL_ROOT": ops.image_root,
        "CROSSMODAL_HOST": "0.0.0.0",
        "CROSSMODAL_EXECUTOR_HOST": "0.0.0.0",  # each executor is alone in its container
        "CROSSMODAL_WORKSPACE": ops.workspace,
        "CROSSMODAL_PRETRAINED": pretrained,
        "CROSSMODAL_DATA_ROOTS": os.pathsep.join(image_path(r, ops) for r in cfg.data_roots),
        KEY_ENV: f"${{{KEY_ENV}:?set {KEY_ENV} (README: Several machines)}}" if fmt == "compose" else "",
    })
    return env


def expand(value: Any, env: dict[str, str]) -> Any:
    """``${{ ENV.NAME }}`` of the Flow YAML replaced from ``env``; an unknown name is an error."""
    if isinstance(value, dict):
        return {k: expand(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def lookup(found: re.Match) -> str:
        if found.group(1) not in env:
            raise ValueError(f"{FLOW_YAML}: ${{{{ ENV.{found.group(1)} }}}} has no value for the export")
        return env[found.group(1)]

    whole = _ENV_REF.fullmatch(value.strip())
    return lookup(whole) if whole else _ENV_REF.sub(lookup, value)


def config_env(ops: OpsSettings = OPS) -> set[str]:
    """The ``${{ ENV.NAME }}`` values the executors' own configs read when they load (the
    merger's, since Jina passes no ``uses_with`` to a ``uses_after``)."""
    return {name for path in (ROOT / "executors").glob("*/config.yml") for name in _ENV_REF.findall(path.read_text())}


def service_env(env: dict[str, str]) -> dict[str, str]:
    """What every service reads from its environment (the gateway: auth, users, request log;
    executors: the key that signs the acting user, and what their configs read)."""
    names = {"CROSSMODAL_AUTH", "CROSSMODAL_WORKSPACE", "CROSSMODAL_REQUEST_LOG", KEY_ENV, *config_env()}
    shared = {k: env[k] for k in sorted(names) if env.get(k)}
    shared["CROSSMODAL_CALIBRATION"] = json.dumps(json.loads(env["CROSSMODAL_CALIBRATION"]))  # one line
    return {**shared, "JINA_OPTOUT_TELEMETRY": "1", "JINA_HIDE_SURVEY": "1",
            "JINA_LOG_LEVEL": env.get("JINA_LOG_LEVEL", "ERROR"), "PYTHONUNBUFFERED": "1"}


def containerised(flow_yaml: dict, env: dict[str, str], fmt: str, image: str, cfg: ServiceConfig,
                  ops: OpsSettings = OPS) -> tuple[dict, dict[str, str]]:
    """The Flow YAML with every executor and the gateway in ``image``, and, by Jina runtime
    name (``indexer``, ``indexer/uses-after``, ``gateway``), the config each runs in the image."""
    flow = expand(copy.deepcopy(flow_yaml), env)
    docker = f"docker://{image}"
    configs = {"gateway": f"{ops.image_root}/{ops.gateway_config}"}
    shared_env = service_env(env)
    secret = ({KEY_ENV: {"name": ops.k8s_secret, "key": ops.k8s_secret_key}} if fmt == "k8s" else None)
    for executor in flow["executors"]:
        configs[executor["name"]] = executor["uses"]
        executor["uses"] = docker
        if executor.get("uses_after"):
            configs[f"{executor['name']}/uses-after"] = executor["uses_after"]
            executor["uses_after"] = docker
        executor.pop("py_modules", None)
        executor.update(env=dict(shared_env), disable_auto_volume=True)
        if secret:
            executor["env_from_secret"] = secret
        if cfg.metrics_port is not None:
            executor["port_monitoring"] = ops.metrics_port
    flow["gateway"] = {"uses": docker, "env": dict(shared_env), **({"env_from_secret": secret} if secret else {})}
    if cfg.metrics_port is not None:
        flow["with"].update(monitoring=True, port_monitoring=cfg.metrics_port)
    else:  # no random local port in the files
        flow["with"].pop("monitoring", None), flow["with"].pop("port_monitoring", None)
    return flow, configs


@contextlib.contextmanager
def _gateway_image(image: str) -> Iterator[None]:
    """Jina asks the Hub for a gateway image unless this variable names one (offline here)."""
    previous = os.environ.get("JINA_GATEWAY_IMAGE")
    os.environ["JINA_GATEWAY_IMAGE"] = image
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("JINA_GATEWAY_IMAGE", None)
        else:
            os.environ["JINA_GATEWAY_IMAGE"] = previous


def _config_of(runtime_name: str, configs: dict[str, str]) -> str:
    """``indexer-1``, ``clip/rep-0`` -> their deployment's config (Jina names shards so)."""
    if runtime_name in configs:
        return configs[runtime_name]
    base = _SHARD_OR_REPLICA.sub("", runtime_name)
    if base not in configs:
        raise ValueError(f"exported service {runtime_name!r} matches no executor of {FLOW_YAML}")
    return configs[base]


def _arg(args: list, flag: str):
    return args[args.index(flag) + 1] if flag in args else None


def _point_uses(args: list, configs: dict[str, str]) -> None:
    """``--uses config.yml`` -> this runtime's config inside the image (heads have no --uses)."""
    if "--uses" in args:
        name = "gateway" if args[0] == "gateway" else _arg(args, "--name")
        args[args.index("--uses") + 1] = _config_of(name, configs)


def _is_stateful(runtime_name: str, ops: OpsSettings) -> bool:
    base = _SHARD_OR_REPLICA.sub("", runtime_name or "")
    return base in ops.stateful_executors


# -- Docker Compose ----------------------------------------------------------------------------
def patch_compose(doc: dict, configs: dict[str, str], shared_env: dict[str, str], ops: OpsSettings = OPS) -> dict:
    volumes = {}
    executors = []
    health = {"interval": f"{ops.healthcheck_interval_s}s", "timeout": "10s", "retries": 3,
              "start_period": f"{ops.healthcheck_start_s}s"}
    for name, service in doc["services"].items():
        env = [*service.get("environment", []), *(f"{k}={v}" for k, v in shared_env.items())]  # Jina drops it on mergers
        service["environment"] = list({e.split("=", 1)[0]: e for e in env}.values())
        args = service["command"]
        _point_uses(args, configs)
        service["command"] = [a.replace("$", "$$") if KEY_ENV not in a else a for a in args]
        service["healthcheck"] = {**service["healthcheck"], **health}
        service["restart"] = "unless-stopped"
        if name == "gateway":
            volumes["gateway-workspace"] = {}
            service["volumes"] = [f"gateway-workspace:{ops.workspace}"]
            continue
        executors.append(name)
        service.pop("ports", None)  # each executor's metrics port stays on the network: no host clashes
        service.pop("volumes", None)
        role = _arg(args, "--pod-role")
        if role != "HEAD" and "/uses-after" not in _arg(args, "--name") and _is_stateful(_arg(args, "--name"), ops):
            volumes[f"{name}-workspace"] = {}
            service["volumes"] = [f"{name}-workspace:{ops.workspace}"]
    doc["services"]["gateway"]["depends_on"] = {name: {"condition": "service_healthy"} for name in executors}
    doc["volumes"] = volumes
    doc.pop("version", None)  # obsolete in Compose v2, which warns about it
    return doc


# -- Kubernetes --------------------------------------------------------------------------------
def _probe(command: list) -> dict:
    return {"exec": {"command": command}, "periodSeconds": 10, "timeoutSeconds": 10, "failureThreshold": 3}


def _claim(name: str, ops: OpsSettings) -> dict:
    return {"metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": ops.k8s_storage}}}}


def _to_statefulset(doc: dict, ops: OpsSettings) -> None:
    """A shard's Deployment -> a StatefulSet whose pod mounts its own claim at the workspace."""
    name = doc["metadata"]["name"]
    spec = doc["spec"]
    doc["kind"] = "StatefulSet"
    spec.pop("strategy", None)
    spec.update(serviceName=name, updateStrategy={"type": "RollingUpdate"},
                volumeClaimTemplates=[_claim(f"{name}-workspace", ops)])
    for container in spec["template"]["spec"]["containers"]:
        if container["name"] == "executor":
            container["volumeMounts"] = [{"name": f"{name}-workspace", "mountPath": ops.workspace}]


def patch_k8s_doc(doc: dict, configs: dict[str, str], ops: OpsSettings = OPS) -> list[dict]:
    """One manifest patched, plus any it needs (the gateway's users claim)."""
    extra = []
    if doc.get("kind") != "Deployment":
        return [doc]
    pod = doc["spec"]["template"]["spec"]
    pod["securityContext"] = {"fsGroup": ops.image_gid}  # the image's user may write to its claims
    runtime = role = main = None
    for container in pod["containers"]:
        args = container.get("args") or []
        _point_uses(args, configs)
        ping = (container.get("livenessProbe") or {}).get("exec", {}).get("command")
        if ping is None:  # the merger beside a head: Jina gives it no probe
            ping = ["jina", "ping", "executor", f"127.0.0.1:{_arg(args, '--port')}"]
            container["livenessProbe"] = {**_probe(ping), "initialDelaySeconds": 30}
        ping = [p for p in ping if not p.startswith("--timeout")]  # Jina writes '--timeout 9500' as one item
        container["livenessProbe"]["exec"]["command"] = list(ping)
        container.setdefault("startupProbe", {**_probe(ping), "failureThreshold": ops.healthcheck_start_s // 10})
        container["startupProbe"]["exec"]["command"] = list(ping)
        container["readinessProbe"] = _probe(list(ping))
        if container["name"] in ("executor", "gateway"):
            main = container
            runtime = "gateway" if args[0] == "gateway" else _arg(args, "--name")
            role = _arg(args, "--pod-role")
    for container in pod["containers"]:  # the merger beside a head gets no environment from Jina
        if container is not main:
            container.setdefault("envFrom", main.get("envFrom", []))
            have = {e["name"] for e in container.setdefault("env", [])}
            container["env"] += [e for e in main.get("env", []) if e["name"] == KEY_ENV and KEY_ENV not in have]
    if runtime == "gateway":
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": "gateway-workspace", "namespace": doc["metadata"]["namespace"]},
                 **{k: v for k, v in _claim("", ops).items() if k == "spec"}}
        pod["volumes"] = [{"name": "workspace", "persistentVolumeClaim": {"claimName": "gateway-workspace"}}]
        main["volumeMounts"] = [{"name": "workspace", "mountPath": ops.workspace}]
        doc["spec"]["strategy"] = {"type": "Recreate"}  # a ReadWriteOnce claim: no second pod during a rollout
        extra.append(claim)
    elif role != "HEAD" and _is_stateful(runtime, ops):
        _to_statefulset(doc, ops)
    return [doc, *extra]


def patch_k8s(folder: Path, configs: dict[str, str], ops: OpsSettings = OPS) -> list[Path]:
    files = sorted(folder.rglob("*.yml"))
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        patched = [out for doc in docs for out in patch_k8s_doc(doc, configs, ops)]
        path.write_text(yaml.safe_dump_all(patched, sort_keys=False))
    return files


# -- entry point -------------------------------------------------------------------------------
def export(cfg: ServiceConfig, fmt: str, out: Path, image: str = OPS.image, ops: OpsSettings = OPS) -> list[Path]:
    """Write the deployment into ``out``; returns the files written."""
    from crossmodal.model.resolve import DEMO_MODEL, resolve

    if fmt not in FORMATS:
        raise ValueError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    spec = resolve(cfg.model or DEMO_MODEL, cfg.pretrained)  # the image bakes the demo model
    env = container_env(cfg, spec, fmt, ops)
    flow_yaml, configs = containerised(yaml.safe_load(FLOW_YAML.read_text()), env, fmt, image, cfg, ops)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _gateway_image(image), contextlib.redirect_stdout(io.StringIO()):
        from jina import Flow

        flow = Flow.load_config(flow_yaml)
        if fmt == "compose":
            path = out / COMPOSE_FILE
            flow.to_docker_compose_yaml(str(path), network_name="crossmodal")
            patched = patch_compose(yaml.safe_load(path.read_text()), configs, service_env(env), ops)
            path.write_text(yaml.safe_dump(patched, sort_keys=False))
            return [path]
        flow.to_kubernetes_yaml(str(out), k8s_namespace=ops.k8s_namespace)
        return patch_k8s(out, configs, ops)


def summary(files: list[Path], fmt: str, out: Path) -> str:
    """The one line that ends an export: how many services and where."""
    docs = [d for path in files for d in yaml.safe_load_all(path.read_text()) if d]
    services = (len(docs[0]["services"]) if fmt == "compose"
                else sum(d["kind"] in ("Deployment", "StatefulSet") for d in docs))
    return f"exported {services} services ({fmt}) into {out}"
