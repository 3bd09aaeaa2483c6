"""Contrastive training / fine-tuning of an open_clip model on (image, caption) pairs.

Uses open_clip's own model factory, tokenizer and ``ClipLoss`` so the result is an
ordinary open_clip checkpoint: ``<out>/<name>.json`` is the model config and
``<out>/<name>.pt`` a float16 state dict that ``open_clip.create_model(name,
pretrained=path)`` loads once the config folder is registered. Training uses the
model's *evaluation* transform: random crops would cut shapes out of the
generated images and make their captions ("three ...") wrong.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Callable, Optional

import open_clip
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from crossmodal.inputs.captions import read_captions
from crossmodal.model.resolve import RANDOM_INIT, config_name, register_local_configs, resolve
from crossmodal.model.towers import create_model, pick_device
from crossmodal.settings import TRAIN
from crossmodal.train.described import DescribedPairs, described_loss

log = logging.getLogger(__name__)

MAX_LOGIT_SCALE = math.log(100)  # open_clip's clamp


class CaptionPairs(Dataset):
    """Images decoded lazily (scales to Flickr-sized sets); captions tokenized once up front."""

    def __init__(self, rows: list[tuple[Path, str]], preprocess: Callable, tokenizer: Callable):
        self.paths = [p for p, _ in rows]
        self.tokens = tokenizer([c for _, c in rows])
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(self.paths[i]) as image:
            return self.preprocess(image.convert("RGB")), self.tokens[i]


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """open_clip's convention: no weight decay on gains, biases, embeddings' scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def _cosine_with_warmup(optimizer: torch.optim.Optimizer, total: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class LockedImagePairs(Dataset):
    """(image feature, caption tokens) pairs: with the image tower locked (LiT), each
    distinct image is encoded once, and a training step runs the text tower only."""

    def __init__(self, pairs: CaptionPairs, features: torch.Tensor, rows: list[int]):
        self.tokens, self.features, self.rows = pairs.tokens, features, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[self.rows[i]], self.tokens[i]


@torch.no_grad()
def _lock_image_tower(clip: torch.nn.Module, pairs: CaptionPairs, device: str, batch_size: int) -> LockedImagePairs:
    """Freeze ``clip.visual`` and encode each distinct image of ``pairs`` once."""
    for p in clip.visual.parameters():
        p.requires_grad_(False)
    clip.visual.eval()
    paths = list(dict.fromkeys(pairs.paths))
    where = {p: i for i, p in enumerate(paths)}
    features = []
    for start in tqdm(range(0, len(paths), batch_size), desc="encode images", unit="batch"):
        batch = []
        for path in paths[start:start + batch_size]:
            with Image.open(path) as image:
                batch.append(pairs.preprocess(image.convert("RGB")))
        features.append(clip.encode_image(torch.stack(batch).to(device), normalize=True).cpu())
    return LockedImagePairs(pairs, torch.cat(features), [where[p] for p in pairs.paths])


def _pixels(paths: list[Path], preprocess: Callable) -> torch.Tensor:
    """Every image preprocessed once: small generated images fit in memory, and a step
    then spends its time in the model rather than in PNG decoding."""
    out = []
    for path in tqdm(paths, desc="preprocess", unit="img"):
        with Image.open(path) as image:
            out.append(preprocess(image.convert("RGB")))
    return torch.stack(out)


def save_checkpoint(model: torch.nn.Module, config: dict, name: str, out: Path) -> Path:
    """Write ``<name>.json`` (open_clip config) and ``<name>.pt`` (float16 state dict)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(config, indent=4) + "\n")
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path = out / f"{name}.pt"
    torch.save(state, path)
    return path


def _create(model: str, pretrained: Optional[str], device: str, seed: int
            ) -> tuple[torch.nn.Module, Callable, dict]:
    """Model, eval transform and the config to save (QuickGELU recorded when the weights need it)."""
    spec = resolve(model, pretrained or "none")
    clip, preprocess = create_model(spec, torch.device(device), seed)
    config = dict(open_clip.get_model_config(spec.name))
    if spec.quick_gelu:
        config["quick_gelu"] = True
    return clip, preprocess, config


def _train_epoch(clip: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, device: str, bar: tqdm) -> float:
    loss_fn = open_clip.ClipLoss()
    losses = []
    for batch in loader:
        if len(batch) == 4:  # DescribedPairs: the batch knows every matching pair
            loss = described_loss(batch, clip, device)
        else:
            images, texts = batch
            image_features = (images.to(device) if images.ndim == 2  # features from a locked image tower
                              else clip.encode_image(images.to(device), normalize=True))
            text_features = clip.encode_text(texts.to(device), normalize=True)
            loss = loss_fn(image_features, text_features, clip.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return sum(losses) / len(losses)


def finetune(captions_csv: Path, images_dir: Path, model: str, pretrained: Optional[str], out: Path,
             epochs: int, batch_size: int, lr: float, seed: int, weight_decay: float = 0.1,
             warmup_fraction: float = 0.05, name: Optional[str] = None, device: str = "auto",
             on_epoch: Optional[Callable[[int, float], None]] = None, lock_image: bool = False,
             calibrate: bool = True, describe: int = 0) -> Path:
    """Train ``model`` contrastively on the captions and return the checkpoint path.

    ``pretrained`` None (or "none") trains from seeded random weights; a tag or a
    checkpoint path fine-tunes. ``name`` (default: the config name) names the
    output files. ``on_epoch(epoch, mean_loss)`` is called after each epoch.
    ``lock_image`` trains the text tower only (LiT): teaching a trained model new ways
    of saying what its images already separate, at a fraction of the cost.
    ``calibrate`` records the model's thresholds beside it (``crossmodal.train.calibrate``).
    ``describe`` > 0 (generated captions) trains on each caption plus
    that many short descriptions of its scene, with a loss that knows which pairs match
    (``crossmodal.train.described``).
    """
    if describe < 0:
        raise ValueError(f"describe: must be >= 0, got {describe}")
    for field, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{field}: must be >= 1, got {value}")
    if not lr > 0:
        raise ValueError(f"lr: must be > 0, got {lr}")
    register_local_configs()
    config = config_name(model)
    if pretrained is not None and pretrained.lower() in RANDOM_INIT:
        pretrained = None
    device = str(pick_device(device))
    clip, preprocess, model_cfg = _create(config, pretrained, device, seed)
    data = CaptionPairs(read_captions(Path(captions_csv), Path(images_dir)), preprocess,
                        open_clip.get_tokenizer(config))
    if lock_image:
        data = _lock_image_tower(clip, data, device, batch_size)
    if describe:
        first = {}
        for path, caption in read_captions(Path(captions_csv), Path(images_dir)):
            first.setdefault(path, caption)
        images = data.features if lock_image else _pixels(list(first), preprocess)
        data = DescribedPairs(images, list(first.values()), open_clip.get_tokenizer(config), describe, seed,
                              off_topic=TRAIN.off_topic_share)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=0,
                        drop_last=len(data) > batch_size, generator=torch.Generator().manual_seed(seed))
    total = epochs * len(loader)
    optimizer = _optimizer(clip, lr, weight_decay)
    scheduler = _cosine_with_warmup(optimizer, total, max(1, int(warmup_fraction * total)))
    clip.train()
    if lock_image:
        clip.visual.eval()
    with tqdm(total=total, desc=f"train {config}", unit="step") as bar:
        for epoch in range(epochs):
            epoch_loss = _train_epoch(clip, loader, optimizer, scheduler, device, bar)
            bar.write(f"epoch {epoch + 1}/{epochs}: mean loss {epoch_loss:.4f}")
            if on_epoch is not None:
                on_epoch(epoch, epoch_loss)
    path = save_checkpoint(clip.eval(), model_cfg, name or config, Path(out))
    if calibrate:
        from crossmodal.train import calibrate as calibration

        print(f"calibrating thresholds -> {calibration.write(*calibration.measure(config, str(path), device=device), path)}")
    summary = f"trained {config} on {len(data)} pairs for {epochs} epoch(s): final epoch loss {epoch_loss:.4f} -> {path}"
    log.info(summary)
    print(summary)
    return path
