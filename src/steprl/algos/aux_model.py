"""Extra models trained inside an algorithm (PRIME's implicit PRM, OREAL's token reward model).

They are ordinary ``nn.Module`` attributes of the LightningModule, so they move with it to the device and
their weights are in its ``state_dict`` (and so in every checkpoint). Each has its own optimiser, stepped
by the algorithm itself outside Lightning's (single) policy optimiser; :class:`AuxOptimizers` builds those
optimisers with the policy's and saves / restores their state (and any schedulers) in the checkpoint.

Several ranks: each rank trains its copy on its own rows, so the gradients are averaged over ranks before
every optimiser step (:func:`inner_step`), and every rank takes the same step: the copies stay identical.
Under DDP the models are kept out of DDP's own gradient reduction (their backward is not Lightning's);
under FSDP2 they are sharded like the policy and FSDP2 averages their gradients in backward. Their losses
are normalised by global counts (summed over ranks) and back-propagated ``world_size x``, like the policy's.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from steprl.utils import dist as D


def backward_global(loss: torch.Tensor) -> None:
    """Back-propagate a loss normalised by GLOBAL counts: one process skips a non-finite loss; several ranks
    always join (gradients are averaged, so ``world_size x`` the share; a NaN reaches every rank and all skip
    the step)."""
    world = D.world_size()
    if world > 1:
        (loss * world).backward()
    elif torch.isfinite(loss):
        loss.backward()


def inner_step(optimizer, params: list, micro_losses: Iterable[torch.Tensor],
               max_grad_norm: float | None) -> tuple[float, float, bool]:
    """One optimiser step of a hand-written inner loop (PRIME's PRM, OREAL's token RM, PROPA's SFT and PRM
    phases): zero the gradients, back-propagate each micro-batch's loss as the iterable yields it (each graph
    is freed before the next forward), average the gradients over ranks, clip them to ``max_grad_norm`` (None:
    no clipping) and step unless the norm is non-finite (a decision every rank takes alike), zero them again.
    Returns ``(summed loss, norm before clipping, stepped)``."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for loss in micro_losses:
        backward_global(loss)
        total += float(loss.detach())
    D.average_gradients(params)
    norm = D.clip_grad_norm(params, max_grad_norm)
    ok = bool(torch.isfinite(torch.tensor(norm)))
    if ok:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total, norm, ok


class AuxOptimizers:
    """Mixin for an RLModule subclass: override :meth:`make_aux_optimizers` to return ``{name: object with
    state_dict / load_state_dict}`` (optimisers, LR schedulers); they are available as ``self.aux[name]``."""

    aux: dict[str, Any]

    def make_aux_optimizers(self) -> dict[str, Any]:
        return {}

    def aux_modules(self) -> list[str]:
        """Attribute names of the models trained by the aux optimisers (kept out of DDP's reduction)."""
        return []

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # read by DistributedDataParallel when Lightning wraps this module (names relative to it; every name of
        # a tied weight, e.g. lm_head.weight = embed_tokens.weight, since DDP looks them up module by module)
        mods = [(name, getattr(self, name)) for name in self.aux_modules() if getattr(self, name, None) is not None]
        self._ddp_params_and_buffers_to_ignore = [
            f"{name}.{n}" for name, mod in mods
            for n, _ in [*mod.named_parameters(remove_duplicate=False), *mod.named_buffers(remove_duplicate=False)]]

    def aux_update(self, optimizer, module: torch.nn.Module, micro_losses: Iterable[torch.Tensor],
                   max_grad_norm: float | None) -> tuple[float, float, bool]:
        """:func:`inner_step` on ``module``'s trainable parameters."""
        return inner_step(optimizer, [p for p in module.parameters() if p.requires_grad], micro_losses,
                          max_grad_norm)

    def global_rows(self, idx: torch.Tensor, real: torch.Tensor | None) -> int:
        """Real (not padding) rows among ``idx`` (``real``: the step's mask, None: all), summed over ranks;
        ``len(idx)`` in one process."""
        if not D.is_distributed():
            return len(idx)
        n = float(real[idx.to(real.device)].sum()) if real is not None and len(real) else float(len(idx))
        return max(1, int(D.all_reduce([n])[0]))

    def configure_optimizers(self):
        out = super().configure_optimizers()
        self.aux = self.make_aux_optimizers()
        pending = getattr(self, "_aux_pending", None) or {}
        for name, obj in self.aux.items():
            if name in pending:
                obj.load_state_dict(pending[name])
        self._aux_pending = None
        return out

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["steprl_aux"] = {name: obj.state_dict() for name, obj in getattr(self, "aux", {}).items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # Lightning restores the module (and calls this) before it builds the optimisers
        self._aux_pending = checkpoint.get("steprl_aux")
        if getattr(self, "aux", None) and self._aux_pending:
            for name, obj in self.aux.items():
                if name in self._aux_pending:
                    obj.load_state_dict(self._aux_pending[name])
