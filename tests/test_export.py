"""``app.py -t export``: the Dockerfile and the Compose / Kubernetes files it writes.

Docker and Kubernetes do not run here: these tests check what can be checked without
them. The files parse; every executor, shard, replica, head and merger is there and runs
the project's image with a config that the image holds; each indexer shard has a volume
or claim of its own; every service has health checks; no secret is written.
"""
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from crossmodal.settings import OPS, ROOT
from tests.harness import run_app

IMAGE = "registry.example/crossmodal:1.2"
EXECUTORS = ("recommender", "clip", "indexer")


def shards_available() -> bool:
    return "--shards" in (ROOT / "app.py").read_text()


TOPOLOGIES = [(1, 1), pytest.param((2, 2), marks=pytest.mark.skipif(
    not shards_available(), reason="--shards/--replicas land with the sharding work on main"))]


def exported(tmp_path_factory, fmt: str, shards: int, replicas: int, *extra: str) -> Path:
    out = tmp_path_factory.mktemp(f"{fmt}-{shards}x{replicas}")
    scale = ["--shards", str(shards), "--replicas", str(replicas)] if (shards, replicas) != (1, 1) else []
    done = run_app("-t", "export", "--format", fmt, "--out", str(out), "--image", IMAGE, *scale, *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exported" in done.stdout
    return out


@pytest.fixture(scope="module", params=TOPOLOGIES, ids=["1x1", "2x2"])
def compose(request, tmp_path_factory):
    shards, replicas = request.param
    out = exported(tmp_path_factory, "compose", shards, replicas, "--metrics")
    return yaml.safe_load((out / "docker-compose.yml").read_text()), shards, replicas


@pytest.fixture(scope="module", params=TOPOLOGIES, ids=["1x1", "2x2"])
def k8s(request, tmp_path_factory):
    shards, replicas = request.param
    out = exported(tmp_path_factory, "k8s", shards, replicas)
    docs = [d for path in sorted(out.rglob("*.yml")) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs, shards, replicas


def arg(args: list, flag: str):
    return args[args.index(flag) + 1] if flag in args else None


def expected_names(shards: int, replicas: int) -> set:
    """Jina's naming: NAME-<shard>, NAME/rep-<replica>, NAME/head, NAME/uses-after."""
    names = {"recommender"}
    names |= {f"clip/rep-{r}" for r in range(replicas)} if replicas > 1 else {"clip"}
    if shards > 1:
        names |= {f"indexer-{s}" for s in range(shards)} | {"indexer/head", "indexer/uses-after"}
    else:
        names.add("indexer")
    return names


def in_image(path: str) -> Path:
    """The repository file an in-image path comes from; the Dockerfile must copy it."""
    assert path.startswith(OPS.image_root + "/"), path
    return ROOT / path[len(OPS.image_root) + 1:]


# -- Dockerfile --------------------------------------------------------------------------------
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_parses_and_builds_from_python_311_slim():
    instructions = dockerfile()
    known = {"FROM", "RUN", "ENV", "COPY", "WORKDIR", "USER", "VOLUME", "EXPOSE", "ENTRYPOINT", "CMD"}
    assert {name for name, _ in instructions} <= known
    assert all(args.startswith("python:3.11-slim") for name, args in instructions if name == "FROM")
    assert ("WORKDIR", OPS.image_root) in instructions


def test_dockerfile_copies_paths_that_exist_and_are_not_ignored():
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    copied = []
    for name, args in dockerfile():
        if name == "COPY" and not args.startswith("--from"):
            *sources, _ = shlex.split(args)
            copied += sources
    for source in copied:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
        assert source.rstrip("/").split("/")[0] not in ignored, f"{source} is excluded by .dockerignore"
    for needed in ("app.py", "crossmodal/", "executors/", "flows/", "ui/", "models/", "data/demo/", "requirements.txt"):
        assert needed in copied, f"the image needs {needed}"


def test_dockerfile_pins_cpu_torch_as_requirements_do():
    requirements = (ROOT / "requirements.txt").read_text()
    pins = re.findall(r"^(torch|torchvision)==(\S+)", requirements, re.M)
    assert len(pins) == 2
    run = " ".join(args for name, args in dockerfile() if name == "RUN")
    assert "download.pytorch.org/whl/cpu" in run and "requirements.txt" in run


def test_dockerfile_entrypoint_is_what_the_export_runs(compose):
    doc, _, _ = compose
    entrypoint = json.loads(dict(dockerfile())["ENTRYPOINT"])
    assert all(service["entrypoint"] == entrypoint for service in doc["services"].values())


# -- Docker Compose ----------------------------------------------------------------------------
def test_compose_names_every_executor_shard_and_replica(compose):
    doc, shards, replicas = compose
    names = {arg(s["command"], "--name") for s in doc["services"].values() if s["command"][0] == "executor"}
    assert names == expected_names(shards, replicas)
    assert "gateway" in doc["services"]


def test_compose_runs_every_service_from_the_project_image_with_a_config_it_holds(compose):
    doc, _, _ = compose
    for name, service in doc["services"].items():
        assert service["image"] == IMAGE, name
        uses = arg(service["command"], "--uses")
        if arg(service["command"], "--pod-role") == "HEAD":
            assert uses is None
            continue
        assert in_image(uses).is_file(), f"{name}: --uses {uses} is not in the image"
    gateway = doc["services"]["gateway"]["command"]
    assert arg(gateway, "--uses") == f"{OPS.image_root}/{OPS.gateway_config}"
    assert "CrossmodalGateway" in (ROOT / OPS.gateway_config).read_text()


def test_compose_executors_tolerate_the_keepalive_pings_of_jinas_channels(compose):
    """Jina's channels ping every ~10 s even when idle, and set the servers' tolerance under
    misspelled names: gRPC's default (one ping per 5 min) answered with GOAWAY "too_many_pings"
    and an error line in the gateway's log after ~45 s idle. Heads and uses-after included."""
    from jina.serve.helper import get_default_grpc_options

    ping_ms = dict(get_default_grpc_options())["grpc.keepalive_time_ms"]
    doc, _, _ = compose
    for name, service in doc["services"].items():
        if service["command"][0] == "executor":
            options = json.loads(arg(service["command"], "--grpc-server-options") or "{}")
            assert options.get("grpc.http2.min_ping_interval_without_data_ms", 300_000) < ping_ms, name


def test_compose_gives_each_indexer_shard_its_own_volume(compose):
    doc, shards, _ = compose
    mounts = {}
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")
            assert source in doc["volumes"], f"{source} is not declared"
            mounts.setdefault(source, []).append((arg(service["command"], "--name") or name, target))
    shard_names = {n for n in expected_names(shards, 1) if n.startswith("indexer") and "/" not in n}
    owners = [owner for owner, _ in sum(mounts.values(), [])]
    assert len(owners) == len(set(owners)) and all(len(m) == 1 for m in mounts.values()), "a volume is shared"
    assert shard_names | {"gateway"} == set(owners)
    assert all(target == OPS.workspace for _, target in sum(mounts.values(), []))


def test_compose_has_health_checks_and_starts_the_gateway_after_healthy_executors(compose):
    doc, _, _ = compose
    for name, service in doc["services"].items():
        check = service["healthcheck"]["test"]
        kind = "gateway" if name == "gateway" else "executor"
        assert check.startswith(f"jina ping {kind} ") and ":" in check.split()[-1], name
    depends = doc["services"]["gateway"]["depends_on"]
    assert set(depends) == set(doc["services"]) - {"gateway"}
    assert all(d == {"condition": "service_healthy"} for d in depends.values())


def test_compose_takes_the_signing_key_from_the_environment_and_writes_no_secret(compose):
    doc, shards, _ = compose
    for name, service in doc["services"].items():
        env = dict(e.split("=", 1) for e in service["environment"])
        assert env["CROSSMODAL_AUTH_KEY"].startswith("${CROSSMODAL_AUTH_KEY:?"), name
        assert env["CROSSMODAL_AUTH"] == "1", f"{name}: containers listen beyond loopback, so tokens are on"
        # the merger's config reads these from its environment (Jina gives a uses_after no uses_with)
        assert int(env["CROSSMODAL_EMBED_DIM"]) > 0 and json.loads(env["CROSSMODAL_CALIBRATION"]), name
        assert env["CROSSMODAL_SHARDS"] == str(shards), name


def test_compose_listens_on_every_interface_and_exposes_metrics(compose):
    doc, _, _ = compose
    for name, service in doc["services"].items():
        args = service["command"]
        assert "--monitoring" in args, name
        if name != "gateway":
            assert arg(args, "--host") == "0.0.0.0", name
            assert "ports" not in service, f"{name}: executors publish no host port (they would clash)"
    assert f"{OPS.metrics_port}:{OPS.metrics_port}" in doc["services"]["gateway"]["ports"]


def test_compose_passes_the_model_as_baked_into_the_image(compose):
    doc, _, _ = compose
    encoder = next(s for s in doc["services"].values() if (arg(s["command"], "--name") or "").startswith("clip"))
    with_ = json.loads(arg(encoder["command"], "--uses-with"))
    assert in_image(with_["pretrained"]).is_file()
    indexer = next(s for s in doc["services"].values()
                   if (arg(s["command"], "--name") or "").startswith("indexer") and arg(s["command"], "--uses-with"))
    with_ = json.loads(arg(indexer["command"], "--uses-with"))
    assert with_["workspace_dir"] == OPS.workspace and with_["embed_dim"] > 0 and json.loads(with_["calibration"])


# -- Kubernetes --------------------------------------------------------------------------------
def workloads(docs):
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def main_container(doc):
    return next(c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] in ("executor", "gateway"))


def test_k8s_names_every_executor_shard_and_replica(k8s):
    docs, shards, replicas = k8s
    names = set()
    for doc in workloads(docs):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if container["args"][0] == "executor":
                names.add(arg(container["args"], "--name"))
    # Kubernetes runs replicas as pods of one Deployment: no per-replica name
    assert names == {re.sub(r"/rep-\d+$", "", n) for n in expected_names(shards, replicas)}
    assert next(d for d in workloads(docs) if d["metadata"]["name"] == "clip")["spec"]["replicas"] == replicas


def test_k8s_runs_everything_from_the_project_image_with_a_config_it_holds(k8s):
    docs, _, _ = k8s
    for doc in workloads(docs):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            assert container["image"] == IMAGE
            uses = arg(container["args"], "--uses")
            if arg(container["args"], "--pod-role") != "HEAD":
                assert in_image(uses).is_file(), f"{doc['metadata']['name']}: --uses {uses}"


def test_k8s_gives_each_indexer_shard_its_own_claim(k8s):
    docs, shards, _ = k8s
    stateful = [d for d in docs if d["kind"] == "StatefulSet"]
    expected = {f"indexer-{s}" for s in range(shards)} if shards > 1 else {"indexer"}
    assert {d["metadata"]["name"] for d in stateful} == expected
    claims = set()
    for doc in stateful:
        spec = doc["spec"]
        assert spec["serviceName"] == doc["metadata"]["name"] and "strategy" not in spec
        (template,) = spec["volumeClaimTemplates"]
        claims.add(template["metadata"]["name"])
        assert main_container(doc)["volumeMounts"] == [{"name": template["metadata"]["name"], "mountPath": OPS.workspace}]
    assert len(claims) == len(stateful)
    gateway_claims = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert [c["metadata"]["name"] for c in gateway_claims] == ["gateway-workspace"]


def test_k8s_has_startup_readiness_and_liveness_probes_everywhere(k8s):
    docs, _, _ = k8s
    for doc in workloads(docs):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                command = container[probe]["exec"]["command"]
                assert command[:3] == ["jina", "ping", "gateway" if container["name"] == "gateway" else "executor"]
                assert re.search(r":\d+$", command[3]), command


def test_k8s_takes_the_signing_key_from_a_secret(k8s):
    docs, _, _ = k8s
    for doc in workloads(docs):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container["env"]}
            ref = env["CROSSMODAL_AUTH_KEY"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": OPS.k8s_secret, "key": OPS.k8s_secret_key}
            assert container["envFrom"], "the shared settings come from the ConfigMap"
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            assert "CROSSMODAL_AUTH_KEY" not in doc["data"]


def test_export_refuses_a_checkpoint_outside_the_repository(tmp_path):
    checkpoint = tmp_path / "elsewhere.pt"
    checkpoint.write_bytes(b"")
    done = run_app("-t", "export", "--format", "compose", "--out", str(tmp_path / "out"),
                   "--model", "tiny-clip", "--pretrained", str(checkpoint))
    assert done.returncode == 2
    assert "outside the repository" in done.stderr and "elsewhere.pt" in done.stderr
