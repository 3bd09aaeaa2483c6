"""Serving as people use it: memory of the running service, one request at a time, concurrent clients.

Ours (``app.py -t query``) and the seed-service baseline (``bench/baseline_flask.py``) run
side by side, both holding the same 10,000 vectors and the same ViT-B-32 architecture;
requests alternate between them so that drift on a shared machine hits both alike.
Every figure is measured ``runs`` times; a target counts as met only if every run meets it.
"""
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import Figure, Report
from bench.encoders import MODEL, SHORT_QUERY
from tests.harness import ROOT, Server, app_env, free_port

N_ITEMS = 10_000
CLIENTS = (1, 4, 16, 64)
ENV = {**app_env(), "GRPC_VERBOSITY": "ERROR"}


def post(url: str, payload: dict, timeout: float = 300) -> dict:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def photo_jpeg(seed: int) -> bytes:
    """A 640x480 JPEG with photo-like smooth content (what the issue measured with)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640] / 100.0
    channels = [np.sin(x * rng.uniform(0.5, 2) + rng.uniform(0, 6)) + np.cos(y * rng.uniform(0.5, 2)) for _ in range(3)]
    pixels = ((np.stack(channels, -1) + 2) * 63 + rng.normal(0, 6, (480, 640, 3))).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


class Target:
    """One service under test: how to send it a text query and a one-image post."""

    def __init__(self, name: str, port: int, ours: bool, root_pid: int):
        self.name, self.port, self.ours, self.root_pid = name, port, ours, root_pid

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of every process of the service so far."""
        return sum(_cpu_seconds(pid) for pid in process_tree(self.root_pid))

    def query(self, text: str = SHORT_QUERY) -> None:
        if self.ours:
            post(f"http://127.0.0.1:{self.port}/search",
                 {"data": [{"id": "q", "text": text}], "parameters": {"k": 10, "username": "user1"}})
        else:
            post(f"http://127.0.0.1:{self.port}/search", {"text": text, "k": 10})

    def add_image(self, key: str, jpeg: bytes) -> None:
        b64 = base64.b64encode(jpeg).decode()
        if self.ours:
            [doc] = post(f"http://127.0.0.1:{self.port}/index", {"data": [
                {"id": key, "owner": "bench", "modality": "image", "uri": "data:image/jpeg;base64," + b64}]})["data"]
            assert doc["status"] in ("indexed", "updated"), doc
        else:
            post(f"http://127.0.0.1:{self.port}/add", {"id": key, "image": b64})


# --- memory ----------------------------------------------------------------------------

def _smaps(pid: int) -> dict[str, float]:
    """Pss and Rss of a process in MB, from smaps_rollup (shared pages split among their users)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Rss"):
                out[key] = int(rest.split()[0]) / 1024
    return out


def _cpu_seconds(pid: int) -> float:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:  # gone since it was listed
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return sorted(out)


def service_memory(server: Server) -> dict[int, dict]:
    """Pss, Rss and whether torch is mapped, for every process of the running service."""
    return {pid: {**_smaps(pid), "torch": "libtorch" in open(f"/proc/{pid}/maps").read()}
            for pid in process_tree(server.proc.pid)}


def full_clip_memory() -> dict[str, float]:
    """One process holding one full ViT-B-32 (torch + open_clip + the model), nothing else."""
    code = ("import sys, torch, open_clip; torch.manual_seed(0); "
            f"m = open_clip.create_model_and_transforms({MODEL!r})[0].eval(); "
            "print('ready', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=ENV, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        return _smaps(proc.pid)
    finally:
        proc.stdin.close()
        proc.wait(60)


def memory(report: Report, server: Server, names: dict[int, str]) -> None:
    rows = service_memory(server)
    clip = full_clip_memory()
    for pid, row in rows.items():
        report.add(Figure(f"PSS {names.get(pid, pid)}", row["Pss"], "MB",
                          note=f"RSS {row['Rss']:.0f} MB, torch {'loaded' if row['torch'] else 'not loaded'}"))
    pss, rss = sum(r["Pss"] for r in rows.values()), sum(r["Rss"] for r in rows.values())
    report.add(Figure("PSS one process holding one full CLIP", clip["Pss"], "MB", note=f"RSS {clip['Rss']:.0f} MB"))
    report.add(Figure(f"PSS whole service, {len(rows)} processes", pss, "MB", note=f"RSS summed {rss:.0f} MB"))
    ratio = pss / clip["Pss"]
    report.add(Figure("service PSS / one full CLIP PSS", ratio, "x", target="<= 1.0x", ratio=ratio,
                      passed=ratio <= 1.0))
    report.add(Figure("service RSS summed / one full CLIP RSS", rss / clip["Rss"], "x",
                      note="RSS counts shared library pages once per process"))
    modelless = [r for r in rows.values() if not r["torch"]]
    worst = max(r["Pss"] for r in modelless)
    report.add(Figure("largest PSS of a process without a model", worst, "MB", target="<= 200 MB, no torch",
                      ratio=worst, passed=worst <= 200 and len(modelless) == len(rows) - 1,
                      note=f"{len(modelless)} of {len(rows)} processes load no torch"))


def role_names(server: Server) -> dict[int, str]:
    """Only the encoder maps torch (both towers, one process per replica)."""
    pids = process_tree(server.proc.pid)
    names = {server.proc.pid: "launcher (app.py)"}
    rest = [p for p in pids if p != server.proc.pid]
    torch_pids = [p for p in rest if "libtorch" in open(f"/proc/{p}/maps").read()]
    other = [p for p in rest if p not in torch_pids]
    for pid in torch_pids:
        names[pid] = "encoder (clip: both towers)"
    listening = _listening_inodes(server.http_port)
    for pid in other:
        links = _fd_links(pid)
        names[pid] = ("gateway" if any(link in listening for link in links) else
                      "indexer" if any(link.endswith("store.sqlite") for link in links) else "recommender")
    return names


def _fd_links(pid: int) -> list[str]:
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return links


def _listening_inodes(port: int) -> set[str]:
    """``socket:[inode]`` of the TCP sockets listening on ``port``."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                out.add(f"socket:[{fields[9]}]")
    return out


# --- one at a time and concurrent ---------------------------------------------------------

def one_at_a_time(report: Report, ours: Target, theirs: Target, repeats: int, run: int) -> dict[str, float]:
    """Interleaved single requests: a text query, and a one-image post, to each service in turn."""
    images = [photo_jpeg(i) for i in range(8)]
    samples = {(t.name, kind): [] for t in (ours, theirs) for kind in ("query", "image")}
    cpu = {key: [] for key in samples}
    for i in range(repeats + 2):
        for target in (ours, theirs):
            for kind, call in (("query", target.query),
                               ("image", lambda t=target, i=i: t.add_image(f"one-{run}-{i}", images[i % len(images)]))):
                used = target.cpu_seconds()
                start = time.perf_counter()
                call()
                elapsed = time.perf_counter() - start
                if i >= 2:
                    samples[(target.name, kind)].append(elapsed)
                    cpu[(target.name, kind)].append(target.cpu_seconds() - used)
    p50 = {key: float(np.median(v)) * 1000 for key, v in samples.items()}
    for (name, kind), value in p50.items():
        what = "text query" if kind == "query" else "one 640x480 JPEG posted"
        p95 = np.percentile(samples[(name, kind)], 95) * 1000
        report.add(Figure(f"run {run}: {name}: {what}, p50 over HTTP", value, "ms", note=f"p95 {p95:.0f} ms"))
        report.add(Figure(f"run {run}: {name}: {what}, CPU per request, all processes", np.mean(cpu[(name, kind)]) * 1000,
                          "ms", note="mean; clock ticks of 10 ms, so read it over many requests"))
    return {"query": p50[(theirs.name, "query")] / p50[(ours.name, "query")],
            "image": p50[(theirs.name, "image")] / p50[(ours.name, "image")]}


def load(target: Target, clients: int, per_client: int) -> tuple[float, list[float]]:
    """``clients`` threads each sending ``per_client`` one-text queries back to back: QPS and latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    texts = [f"{SHORT_QUERY} number {i}" for i in range(per_client)]

    def client() -> None:
        mine = []
        for text in texts:
            start = time.perf_counter()
            target.query(text)
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies) / (time.perf_counter() - start), latencies


def concurrency(report: Report, ours: Target, theirs: Target, run: int, quick: bool) -> dict:
    out = {}
    for clients in CLIENTS:
        per_client = max(2, (32 if quick else 64) // clients)
        for target in (ours, theirs):
            target.query()  # warm
            qps, lat = load(target, clients, per_client)
            p50, p95 = np.percentile(lat, 50) * 1000, np.percentile(lat, 95) * 1000
            out[(target.name, clients)] = (qps, p50, p95)
            report.add(Figure(f"run {run}: {target.name}, {clients} concurrent HTTP clients", qps, "QPS",
                              note=f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, {len(lat)} queries"))
    return out


def profile(report: Report, server: Server, names: dict[int, str], repeats: int) -> None:
    """Where one request's time goes: each executor's own time (Jina's route records), the rest
    being the gateway and the hops; inside the executors, the steps timed in this process."""
    from docarray import DocList
    from jina import Client

    from bench.flow import executor_seconds
    from crossmodal.api.schemas import ContentDoc

    client = Client(host="127.0.0.1", port=server.grpc_port)
    jpeg = photo_jpeg(99)
    cases = {"text query": ("/search", lambda i: ContentDoc(id="q", text=SHORT_QUERY)),
             "one-image post": ("/index", lambda i: ContentDoc(id=f"prof{i}", owner="bench", modality="image",
                                                              blob=jpeg))}
    for case, (endpoint, make) in cases.items():
        per_step: dict[str, list[float]] = {}
        used = {}
        for i in range(repeats + 1):
            if i == 1:  # after the first request, which is not counted
                used = {pid: _cpu_seconds(pid) for pid in names}
            start = time.perf_counter()
            [response] = client.post(endpoint, DocList[ContentDoc]([make(i)]), parameters={"k": 10},
                                     return_responses=True)
            total = time.perf_counter() - start
            if i == 0:
                continue
            steps = {route.executor: (route.end_time.ToNanoseconds() - route.start_time.ToNanoseconds()) / 1e6
                     for route in response.routes
                     if route.executor != "gateway" and route.start_time.seconds and route.end_time.seconds}
            steps["gateway, hops, (de)serialisation"] = total * 1000 - executor_seconds(response) * 1000
            for name, ms in steps.items():
                per_step.setdefault(name, []).append(ms)
        for name, values in per_step.items():
            report.add(Figure(f"profile, {case} over gRPC: {name}", float(np.median(values)), "ms"))
        for pid, before in used.items():
            report.add(Figure(f"profile, {case} over gRPC: CPU per request, {names[pid]}",
                              (_cpu_seconds(pid) - before) / repeats * 1000, "ms", note="mean"))
    _steps_in_process(report, jpeg, repeats)


def _steps_in_process(report: Report, jpeg: bytes, repeats: int) -> None:
    """The image executor's and the indexer's own steps for one 640x480 JPEG, timed alone."""
    from bench.common import figure, repeat
    from crossmodal.index.content import ContentIndex, IndexConfig
    from crossmodal.index.store import Item
    from crossmodal.inputs.images import ImageLimits, decode, thumbnail_data_uri

    limits = ImageLimits(2**24, 10**8, ())
    image = decode(jpeg, limits, min_size=256)
    report.add(figure("profile step: decode 640x480 JPEG (reduced-scale)", repeat(lambda: decode(jpeg, limits,
                      min_size=256), repeats), "ms", scale=1000))
    report.add(figure("profile step: 256 px thumbnail JPEG", repeat(lambda: thumbnail_data_uri(image), repeats), "ms",
                      scale=1000))
    with tempfile.TemporaryDirectory() as tmp:
        index = ContentIndex(IndexConfig(Path(tmp), "bench", 512))
        vector = np.ones(512, np.float32) / np.sqrt(512)
        counter = iter(range(10**6))
        report.add(figure("profile step: indexer upsert of one item (SQLite commit + FAISS add)",
                          repeat(lambda: index.upsert([Item(f"p{next(counter)}", "bench", "image", vector)]), repeats),
                          "ms", scale=1000))
        index.close()


def start_baseline(vectors: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.baseline_flask", str(port), str(vectors)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2)
            return proc, port
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, 9)
    raise TimeoutError("baseline did not start")


def run(report: Report, quick: bool, runs: int = 2) -> None:
    from bench.flow import populate

    with tempfile.TemporaryDirectory(prefix="crossmodal-serving-") as tmp:
        tmp = Path(tmp)
        workspace, vectors = tmp / "ws", tmp / "vectors.npy"
        populate(workspace, N_ITEMS, vectors)
        server = Server(workspace, free_port(), free_port(), "--model", MODEL, "--pretrained", "none")
        baseline, port = start_baseline(vectors)
        try:
            with server:
                ours = Target("ours", server.http_port, True, server.proc.pid)
                theirs = Target("baseline Flask", port, False, baseline.pid)
                ours.query()
                names = role_names(server)
                memory(report, server, names)
                profile(report, server, names, 10 if quick else 30)
                one, conc = [], []
                for run_no in range(1, runs + 1):
                    one.append(one_at_a_time(report, ours, theirs, 10 if quick else 20, run_no))
                    conc.append(concurrency(report, ours, theirs, run_no, quick))
                summarise(report, one, conc, ours, theirs)
        finally:
            os.killpg(baseline.pid, 9)
            baseline.wait(30)


def _all(values: list[float], minimum: float) -> bool:
    return all(v >= minimum for v in values)


def summarise(report: Report, one: list[dict], conc: list[dict], ours: Target, theirs: Target) -> None:
    """Targets, each a ratio measured side by side within a run; met only if met in every run."""
    def add(name: str, values: list[float], target: str, passed: bool) -> None:
        report.add(Figure(name, float(np.median(values)), "x", spread=(min(values), max(values)), target=target,
                          ratio=float(np.median(values)), passed=passed,
                          note="per run: " + ", ".join(f"{v:.2f}" for v in values)))

    image = [r["image"] for r in one]
    query = [r["query"] for r in one]
    add("single-image post p50: baseline / ours", image, ">= 1.0x", _all(image, 1.0))
    add("single text query p50: baseline / ours", query, ">= 2.0x", _all(query, 2.0))
    scale = [c[(ours.name, 16)][0] / c[(ours.name, 1)][0] for c in conc]
    add("ours: QPS at 16 clients / QPS at 1 client", scale, ">= 3x", _all(scale, 3.0))
    tail = [c[(ours.name, 16)][2] / c[(ours.name, 1)][1] for c in conc]
    add("ours: p95 at 16 clients / p50 at 1 client", tail, "< 4x", all(v < 4 for v in tail))
    for clients in CLIENTS:
        versus = [c[(ours.name, clients)][0] / c[(theirs.name, clients)][0] for c in conc]
        add(f"QPS at {clients} clients: ours / baseline", versus, "", None)


