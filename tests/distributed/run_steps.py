"""Run a few training steps of a composed config and write each step's logged metrics (rank 0) to a JSON file.

    python tests/distributed/run_steps.py OUT_JSON OUT_DIR [override ...]

Every rank also writes ``OUT_JSON.rank<r>`` with float64 sums of |w| (and of w · a fixed ramp, which sees
a permutation or sign change) of each parameter of the models trained by an algorithm's own optimiser
(``aux_modules``, e.g. PRIME's PRM), before and after training: their local tensors (no gather), so two
ranks' files are equal only if their copies are. It also holds, per trainable policy parameter, the float64
sums of |Δw| and of Δw · ramp of this rank's local tensor (its FSDP2 shard) over the run, and the rows' tokens of
each micro-batch of the last update (the last ``Step``'s ``micro_batches``).

Lightning's DDP / ModelParallel launchers start the other ranks by re-running this same command line.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning as L  # noqa: E402
import torch  # noqa: E402

from steprl.train import build  # noqa: E402
from tests.helpers import Recorder, compose_train  # noqa: E402


def aux_checksums(module) -> dict[str, list[float]]:
    out = {}
    for name in getattr(module, "aux_modules", lambda: [])():
        for n, p in getattr(module, name).named_parameters():
            t = (p.to_local() if hasattr(p, "to_local") else p).detach().double().reshape(-1)
            ramp = torch.linspace(-1.0, 1.0, t.numel(), dtype=torch.float64)
            out[f"{name}.{n}"] = [float(t.abs().sum()), float((t * ramp).sum())]
    return out


def local_policy(module) -> dict[str, torch.Tensor]:
    return {n: (p.to_local() if hasattr(p, "to_local") else p).detach().double().reshape(-1).clone()
            for n, p in module.policy.named_parameters() if p.requires_grad}


class AuxRecorder(L.Callback):
    def __init__(self):
        self.before: dict[str, list[float]] = {}
        self.policy_before: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, pl_module):
        self.before = aux_checksums(pl_module)
        self.policy_before = local_policy(pl_module)

    def policy_delta(self, module) -> dict[str, list[float]]:
        out = {}
        for n, after in local_policy(module).items():
            d = after - self.policy_before[n]
            ramp = torch.linspace(-1.0, 1.0, d.numel(), dtype=torch.float64)
            out[n] = [float(d.abs().sum()), float((d * ramp).sum())]
        return out


def main() -> None:
    out_json, out_dir, overrides = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    cfg = compose_train(["logger=none", "callbacks.progress_bar=null", "callbacks.sample_table=null", *overrides],
                        out_dir)
    module, data, trainer = build(cfg)
    rec, aux = Recorder(), AuxRecorder()
    trainer.callbacks.extend([rec, aux])
    trainer.fit(module, datamodule=data, ckpt_path=cfg.get("ckpt_path"))
    Path(f"{out_json}.rank{trainer.global_rank}").write_text(json.dumps(
        {"aux_before": aux.before, "aux_after": aux_checksums(module), "rows": rec.rows,
         "policy_delta": aux.policy_delta(module), "micro_batch_cuts": rec.outputs["step"].micro_batches}))
    if trainer.global_rank == 0:
        params = {n: float(p.detach().float().abs().sum()) for n, p in module.policy.named_parameters()
                  if p.requires_grad and not hasattr(p, "full_tensor")}
        out_json.write_text(json.dumps({"rows": rec.rows, "world": trainer.world_size,
                                        "consumed": data.consumed, "param_abs_sum": params}))


if __name__ == "__main__":
    main()
