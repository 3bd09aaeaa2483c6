"""The seed service's design, rebuilt minimally: Flask, one item encoded and added per request.

    python -m bench.baseline_flask PORT [VECTORS.npy]

Same model (ViT-B-32, seeded random weights) and a FAISS IndexFlatIP, as the seed service had;
VECTORS.npy pre-loads the index so that its searches scan as many items as ours.
"""
import base64
import io
import sys

import faiss
import numpy as np
import open_clip
import torch
from flask import Flask, jsonify, request
from PIL import Image

torch.manual_seed(0)
MODEL, _, PREPROCESS = open_clip.create_model_and_transforms("ViT-B-32")
MODEL.eval()
TOKENIZER = open_clip.get_tokenizer("ViT-B-32")
INDEX = faiss.IndexFlatIP(512)
IDS: list[str] = []
if len(sys.argv) > 2:
    INDEX.add(np.load(sys.argv[2]))
    IDS.extend(f"pre{i}" for i in range(INDEX.ntotal))
app = Flask(__name__)


@torch.inference_mode()
def embed(item: dict) -> np.ndarray:
    if "text" in item:
        vector = MODEL.encode_text(TOKENIZER([item["text"]]))
    else:
        image = Image.open(io.BytesIO(base64.b64decode(item["image"]))).convert("RGB")
        vector = MODEL.encode_image(PREPROCESS(image)[None])
    return torch.nn.functional.normalize(vector, dim=-1).numpy()


@app.post("/add")
def add():
    item = request.get_json()
    INDEX.add(embed(item))
    IDS.append(item["id"])
    return jsonify({"status": "indexed"})


@app.post("/search")
def search():
    item = request.get_json()
    scores, rows = INDEX.search(embed(item), item.get("k", 10))
    return jsonify([{"id": IDS[r], "score": float(s)} for s, r in zip(scores[0], rows[0]) if r >= 0])


@app.get("/ready")
def ready():
    return "ok"


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=False)
