"""Export the policy of a training checkpoint as a Hugging Face model directory (config, weights, tokenizer).

    python -m steprl.export <run>/checkpoints/last.ckpt <out_dir>

The directory loads with ``model.path=<out_dir>`` (or ``AutoModelForCausalLM.from_pretrained``). The shipped
warm start ``src/steprl/assets/tiny_arith`` was made this way (see README, "Warm start").
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from steprl.models import load_model


def export(ckpt_path: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    model, tokenizer, model_cfg = load_checkpoint_policy(ckpt_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(getattr(torch, dtype)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    from steprl.models.vision import is_vision_model, load_processor

    if is_vision_model(model):  # a vision-language model: its image processor loads back with the directory
        load_processor(**model_cfg).image_processor.save_pretrained(out)
    return out


def load_checkpoint_policy(ckpt_path: str | Path):
    """``(model, tokenizer, model_cfg)``: the policy saved in a steprl training checkpoint and the ``model``
    config of the run that saved it (``load_model``'s keys; e.g. for its image processor)."""
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    model_cfg = (ckpt.get("steprl") or {}).get("model")
    if model_cfg is None:
        raise ValueError(f"{ckpt_path} is not a steprl training checkpoint (no model config in it)")
    model, tokenizer = load_model(**model_cfg)
    state = {k[len("policy."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("policy.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    real_missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embedding
    if real_missing or unexpected:
        raise ValueError(f"{ckpt_path}: checkpoint does not match the model config "
                         f"(missing {real_missing[:5]}, unexpected {unexpected[:5]})")
    return model, tokenizer, model_cfg


def load_policy(ckpt_path: str | Path):
    """``(model, tokenizer)`` of the policy saved in a steprl training checkpoint."""
    return load_checkpoint_policy(ckpt_path)[:2]


def load_model_or_checkpoint(model: str | None = None, ckpt: str | None = None):
    """``(model, tokenizer)`` from a model directory / hub id / ``steprl:<name>``, or from a steprl training
    checkpoint (the evaluation scripts' ``--model`` / ``--ckpt``)."""
    if ckpt:
        return load_policy(ckpt)
    from steprl.models import load_model

    return load_model(path=model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt")
    ap.add_argument("out_dir")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    print(export(args.ckpt, args.out_dir, args.dtype))


if __name__ == "__main__":
    main()
