"""CLIP: resolving ``--model/--pretrained`` (no torch needed), loading one tower, encoding."""
