"""Processes that run no model never load torch or open_clip, and still know the model."""
import subprocess
import sys

from tests.harness import ROOT, TINY_MODEL

PROBE = f"""
import sys
from crossmodal.model.guard import block_model_libraries
block_model_libraries()
import executors.indexer.executor, executors.recommender.executor, crossmodal.serve.gateway, crossmodal.serve.flow
from crossmodal.model.resolve import embed_dim, resolve
spec = resolve({TINY_MODEL!r}, "none")
print(spec.label, embed_dim(spec), sorted(m for m in ("torch", "open_clip", "sklearn", "hdbscan") if m in sys.modules))
try:
    import torch
except ModuleNotFoundError as err:
    print("blocked:", err)
"""


def test_no_model_processes_import_no_model_library():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-2] == f"{TINY_MODEL}/random 32 []", lines
    assert lines[-1].startswith("blocked: torch is not loaded in this process"), lines


def test_encoders_lift_the_block():
    code = ("from crossmodal.model.guard import block_model_libraries, blocked; block_model_libraries(); "
            "import executors.clip.executor, sys; print(blocked(), 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["False", "True"]
