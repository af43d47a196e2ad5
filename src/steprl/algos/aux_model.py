"""Extra models trained inside an algorithm (PRIME's implicit PRM, OREAL's token reward model).

They are ordinary ``nn.Module`` attributes of the LightningModule, so they move with it to the device and
their weights are in its ``state_dict`` (and so in every checkpoint). Each has its own optimiser, stepped
by the algorithm itself outside Lightning's (single) policy optimiser; :class:`AuxOptimizers` builds those
optimisers with the policy's and saves / restores their state (and any schedulers) in the checkpoint.
"""
from __future__ import annotations

from typing import Any


class AuxOptimizers:
    """Mixin for an RLModule subclass: override :meth:`make_aux_optimizers` to return ``{name: object with
    state_dict / load_state_dict}`` (optimisers, LR schedulers); they are available as ``self.aux[name]``."""

    aux: dict[str, Any]

    def make_aux_optimizers(self) -> dict[str, Any]:
        return {}

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
