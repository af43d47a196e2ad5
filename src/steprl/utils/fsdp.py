"""FSDP2 for Lightning: ``fully_shard`` on each decoder layer and the root, through ``ModelParallelStrategy``.

``hardware=fsdp`` (GPUs, NCCL) and ``hardware=fsdp_cpu`` (2 CPU processes, gloo; for tests) both use
:class:`FSDP2Strategy`. The LightningModule's ``configure_model`` calls :func:`shard_model` on the policy
(and on frozen copies such as the reference policy) with the strategy's settings.
"""
from __future__ import annotations

import torch
from lightning.pytorch.strategies import ModelParallelStrategy

_DTYPES = {None: None, "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def _dtype(name, key: str):
    if name not in _DTYPES:
        raise ValueError(f"trainer.strategy.{key}={name!r} is not one of {sorted(k for k in _DTYPES if k)} or null")
    return _DTYPES[name]


class FSDP2Strategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` (data parallel over all ranks) plus the FSDP2 settings the module applies.

    ``param_dtype`` / ``reduce_dtype``: FSDP2 ``MixedPrecisionPolicy`` (e.g. bf16 compute and all-gathers,
    fp32 gradient reduce-scatter; the sharded master weights and optimiser state stay in the model's dtype,
    fp32 by default). null: no mixed precision. ``cpu_offload``: keep sharded parameters, gradients and the
    optimiser step on CPU (``CPUOffloadPolicy``). ``reshard_after_forward``: free gathered parameters after
    each forward (ZeRO-3 like; False keeps them until backward, ZeRO-2 like). ``hsdp``: shard within a node
    and replicate across nodes (Lightning's 2-D mesh) instead of sharding over every rank.
    """

    def __init__(self, param_dtype: str | None = None, reduce_dtype: str | None = None, cpu_offload: bool = False,
                 reshard_after_forward: bool = True, hsdp: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.param_dtype = _dtype(param_dtype, "param_dtype")
        self.reduce_dtype = _dtype(reduce_dtype, "reduce_dtype")
        self.cpu_offload, self.reshard_after_forward, self.hsdp = cpu_offload, reshard_after_forward, hsdp

    def fsdp_mesh(self):
        """1-D mesh over all ranks (FSDP), or Lightning's (nodes x processes) mesh for HSDP."""
        if self.hsdp:
            return self.device_mesh
        from torch.distributed.device_mesh import init_device_mesh

        return init_device_mesh(self.root_device.type, (self.world_size,))

    def model_to_device(self) -> None:
        if not self.cpu_offload:
            return super().model_to_device()
        # offloaded parameters stay on CPU (FSDP2 moves them per use); buffers (rotary tables) go to the device
        for module in self.model.modules():
            for name, buf in list(module.named_buffers(recurse=False)):
                if buf is not None:
                    module._buffers[name] = buf.to(self.root_device)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of an HF model (classes in ``_no_split_modules``; works through peft wrappers)."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:  # fall back to the largest ModuleList (``model.layers`` / ``transformer.h``)
        lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
        layers = list(max(lists, key=len)) if lists else []
    return layers


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_model(model: torch.nn.Module, mesh, param_dtype=None, reduce_dtype=None, cpu_offload: bool = False,
                reshard_after_forward: bool = True) -> torch.nn.Module:
    """``fully_shard`` each decoder layer, then the root (embeddings, final norm, LM head)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    if is_sharded(model):
        return model
    kw = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
    if param_dtype is not None:
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype or torch.float32)
    if cpu_offload:
        kw["offload_policy"] = CPUOffloadPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, **kw)
    fully_shard(model, **kw)
    return model


def shard_from_strategy(model: torch.nn.Module, strategy) -> torch.nn.Module:
    """Shard ``model`` with the settings of ``strategy`` (an :class:`FSDP2Strategy` or a plain
    ``ModelParallelStrategy``, which gets FSDP over all ranks without mixed precision)."""
    if isinstance(strategy, FSDP2Strategy):
        return shard_model(model, strategy.fsdp_mesh(), strategy.param_dtype, strategy.reduce_dtype,
                           strategy.cpu_offload, strategy.reshard_after_forward)
    from torch.distributed.device_mesh import init_device_mesh

    return shard_model(model, init_device_mesh(strategy.root_device.type, (strategy.world_size,)))
