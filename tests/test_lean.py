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


def test_encoder_lifts_the_block_and_keeps_unused_libraries_out():
    """The encoder's module imports no torch; its constructor lifts the block for the model
    but keeps timm out, which open_clip would import although this model does not use it,
    and triton, which torch would import although the towers run eagerly on the CPU."""
    code = f"""
import sys
from crossmodal.model.guard import block_model_libraries, blocked
block_model_libraries()
from executors.clip.executor import ClipEncoder
print("module", "torch" in sys.modules)
encoder = ClipEncoder(model={TINY_MODEL!r}, pretrained="none")
print("encoder", blocked("torch"), "torch" in sys.modules, blocked("timm"), "timm" in sys.modules,
      "triton" in sys.modules)
print("compiler", "torch._dynamo" in sys.modules, "sympy" in sys.modules, encoder.model.encode_texts(["a"], 1).shape)
encoder.close()
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-3:] == ["module False", "encoder False True True False False", "compiler False False (1, 32)"], lines


def test_torchvision_without_the_compiler_still_reaches_it_when_asked():
    """The stand-in is gone once torchvision is in: roi_align's name reaches the real
    dynamo on first use, and dynamo itself imports whole."""
    code = """
import sys
from crossmodal.model.guard import import_torchvision_without_compiler
import_torchvision_without_compiler()
roi_align = sys.modules["torchvision.ops.roi_align"]  # the package exports a function of that name
print("in", "torchvision" in sys.modules, "torch._dynamo" in sys.modules, "torch._dynamo.utils" in sys.modules)
print("call", roi_align.is_compile_supported("cpu"), "torch._dynamo" in sys.modules)
from torch._dynamo.utils import is_compile_supported
print("real", is_compile_supported("cpu"), callable(sys.modules["torch._dynamo"].optimize))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    real = lines[-1].split()[1]
    assert lines[-3:] == ["in True False False", f"call {real} True", f"real {real} True"], lines


def test_unused_libraries_follow_the_model_config_and_the_device():
    from crossmodal.model.resolve import resolve, unused_libraries

    assert unused_libraries(resolve("ViT-B-32", "none"), "cpu") == ("timm", "transformers", "triton")
    assert unused_libraries(resolve("ViT-B-16-SigLIP", "none"), "cpu") == ("triton",)  # timm tower, HF tokenizer
    assert unused_libraries(resolve("roberta-ViT-B-32", "none"), "cpu") == ("timm", "triton")  # HF text tower
    assert unused_libraries(resolve("RN50", "none"), "cuda") == ("timm", "transformers")  # CUDA looks triton up
    assert unused_libraries(resolve("RN50", "none"), "cuda:1") == ("timm", "transformers")
