"""Engine and model tests run with one torch thread (see tests/conftest.py); the tiny policy, its rollouts and the
log-prob module that the packed and shared-prompt forwards are compared on."""
import pytest
import torch

from steprl.algos.base import RLModule
from steprl.models import load_model
from steprl.rollout.hf import HFEngine

TINY = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=48,
            max_position_embeddings=256)
PROMPTS = ["1+2=", "hello world, a longer prompt", "ab"]  # different lengths: left padding
LORA = {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


@pytest.fixture
def tiny_policy():
    """``make(lora=None, **load_model options) -> (model, tokenizer)``: a 2-layer tiny decoder with weights drawn
    larger than the stock init (std 0.3, seed 0), so that every position matters."""

    def make(lora=None, **kw):
        model, tok = load_model(tiny=TINY, lora=lora, **kw)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() == 2 and "lora" not in name:
                    p.normal_(0.0, 0.3, generator=g)
        return model, tok

    return make


@pytest.fixture
def shuffled_rollouts():
    """``make(model, tok) -> Rollouts``: 3 samples of each of PROMPTS (temperature 1.5, seed 0, responses of
    different lengths, so right padding is exercised too), rows shuffled (seed 1)."""

    def make(model, tok):
        ro = HFEngine(max_new_tokens=10, temperature=1.5).generate(model, tok, PROMPTS, n=3,
                                                                   generator=torch.Generator().manual_seed(0))
        assert len(set(ro.response_mask.sum(-1).tolist())) > 1
        return ro.select(torch.randperm(len(ro), generator=torch.Generator().manual_seed(1)))

    return make


@pytest.fixture
def logp_module():
    """``make(share=False, packed=False, temperature=1.0) -> RLModule`` for ``RLModule.forward_logp``, which reads
    only the engine and the batch settings."""

    def make(share: bool = False, packed: bool = False, temperature: float = 1.0) -> RLModule:
        mod = RLModule.__new__(RLModule)
        mod.engine = HFEngine(temperature=temperature)
        mod.batch_cfg = {"share_prompt": share, "packed": packed}
        return mod

    return make
