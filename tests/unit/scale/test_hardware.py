"""Hardware presets, the optimizer group and the multi-rank data split: composed from the real config tree."""
from __future__ import annotations

import itertools

import pytest
import torch
from omegaconf import open_dict

from steprl.config import ConfigError, check_config, register_resolvers, world_size_of
from steprl.models.optim import build_optimizer
from steprl.rollout.data import RolloutDataModule, StreamSampler
from steprl.tasks import ArithTask
from tests.helpers import compose_train

register_resolvers()


@pytest.mark.parametrize("preset,world,precision,strategy", [
    ("cpu", 1, "32-true", None), ("ddp_cpu", 2, "32-true", "ddp"),
    ("fsdp_cpu", 2, "32-true", "steprl.utils.fsdp.FSDP2Strategy"), ("gpu", 1, "bf16-mixed", None),
    ("ddp", None, "bf16-mixed", "ddp"), ("fsdp", None, "32-true", "steprl.utils.fsdp.FSDP2Strategy"),
    ("multinode", 16, "32-true", "steprl.utils.fsdp.FSDP2Strategy")])
def test_presets_compose(preset, world, precision, strategy, tmp_path):
    cfg = compose_train([f"hardware={preset}", "logger=none"], tmp_path)
    check_config(cfg)
    assert world_size_of(cfg.trainer) == world
    assert cfg.trainer.precision == precision
    s = cfg.trainer.get("strategy")
    assert (s if isinstance(s, str) or s is None else s._target_) == strategy
    if preset in ("gpu", "ddp", "fsdp", "multinode"):
        assert cfg.model.dtype == "float32"  # fp32 master weights under bf16 compute
    if world and world > 1:
        assert cfg.trainer.use_distributed_sampler is False  # each rank draws its own prompts


def test_multinode_uses_submitit_with_the_trainer_shape(tmp_path):
    cfg = compose_train(["hardware=multinode", "trainer.num_nodes=4", "logger=none"], tmp_path)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.nodes == 4 and cfg.hydra.launcher.tasks_per_node == cfg.trainer.devices == 8


def test_global_batch_must_split_over_ranks(tmp_path):
    cfg = compose_train(["hardware=ddp_cpu", "logger=none", "batch.prompts_per_step=3", "batch.minibatch_size=24",
                         "batch.micro_batch_size=4"],
                        tmp_path)
    with pytest.raises(ConfigError, match=r"batch.prompts_per_step=3 .* world size .* = 2"):
        check_config(cfg)
    cfg = compose_train(["hardware=ddp_cpu", "logger=none", "batch.prompts_per_step=4", "batch.samples_per_prompt=3",
                         "batch.minibatch_size=3", "batch.micro_batch_size=1"], tmp_path)
    with pytest.raises(ConfigError, match=r"batch.minibatch_size=3"):
        check_config(cfg)


def test_quantization_needs_a_gpu_and_adapters(tmp_path):
    cfg = compose_train(["logger=none", "model.quantization=4bit", "model.lora.r=8"], tmp_path)
    with pytest.raises(ConfigError, match=r"model.quantization=4bit .* needs a GPU"):
        check_config(cfg)
    cfg = compose_train(["logger=none", "hardware=gpu", "model.quantization=4bit"], tmp_path)
    with pytest.raises(ConfigError, match=r"set model.lora"):
        check_config(cfg)


@pytest.mark.parametrize("name", ["adamw", "adamw8bit", "paged_adamw8bit"])
def test_optimizer_group_sets_the_name_and_keeps_optim_lr(name, tmp_path):
    cfg = compose_train([f"optimizer={name}", "optim.lr=1e-3", "logger=none"], tmp_path)
    assert cfg.optim.name == name and cfg.optim.lr == 1e-3 and cfg.optim.scheduler == "constant"
    check_config(cfg)


def test_unknown_optimizer_is_rejected(tmp_path):
    cfg = compose_train(["logger=none"], tmp_path)
    with open_dict(cfg):
        cfg.optim.name = "sgd"
    with pytest.raises(ConfigError, match="optim.name='sgd'"):
        check_config(cfg)


def test_adamw8bit_keeps_8bit_state_and_paged_needs_cuda():
    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 64)
    opt = build_optimizer("adamw8bit", lin.parameters(), lr=1e-2)
    w0 = lin.weight.detach().clone()
    lin(torch.randn(4, 128)).pow(2).mean().backward()
    opt.step()
    assert not torch.equal(lin.weight, w0)
    assert opt.state[lin.weight]["state1"].dtype == torch.uint8  # 8-bit first moment
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="paged_adamw8bit .* needs a GPU"):
            build_optimizer("paged_adamw8bit", lin.parameters(), lr=1e-2)


def test_rank_slices_of_the_stream_are_the_one_process_batches():
    """Rank r takes the r-th slice of every global batch: the ranks' prompts are distinct and together are
    what one process draws, step by step."""
    one = StreamSampler(11, seed=3, start=5, block=4, part=4, offset=0)
    r0 = StreamSampler(11, seed=3, start=5, block=4, part=2, offset=0)
    r1 = StreamSampler(11, seed=3, start=5, block=4, part=2, offset=2)
    first = lambda s, k: list(itertools.islice(iter(s), k))  # noqa: E731
    assert first(one, 12) == [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    assert first(r0, 6) == [5, 6, 9, 10, 13, 14] and first(r1, 6) == [7, 8, 11, 12, 15, 16]


class _Trainer:  # the two attributes the data module reads from its trainer
    def __init__(self, rank, world):
        self.global_rank, self.world_size = rank, world


def test_datamodule_splits_prompts_and_counts_the_global_position():
    task = ArithTask(num_train=20, num_val=4, seed=0)
    dms = [RolloutDataModule(task, 4, seed=1) for _ in range(3)]
    dms[1].trainer, dms[2].trainer = _Trainer(0, 2), _Trainer(1, 2)
    batches = [list(itertools.islice(iter(dm.train_dataloader()), 2)) for dm in dms]
    uid = lambda b: [s.uid for s in b]  # noqa: E731
    for step in range(2):
        assert uid(batches[1][step]) + uid(batches[2][step]) == uid(batches[0][step])
        for dm, b in zip(dms, batches):
            dm.mark_consumed(b[step])
    assert [dm.consumed for dm in dms] == [8, 8, 8]
    # refill: rank r draws every world-th position of the refill stream
    single = uid(dms[0].draw(4))
    assert uid(dms[1].draw(2)) == single[0::2] and uid(dms[2].draw(2)) == single[1::2]
    assert dms[1].refill_pos == 2
    dms[1].trainer = _Trainer(0, 3)
    with pytest.raises(ValueError, match="prompts_per_step=4 .* world size 3"):
        dms[1].train_dataloader()
