"""vLLM rollouts (``rollout=vllm``, optional extra ``pip install 'steprl[vllm]'``; GPU only).

A colocated engine: each training rank owns an in-process ``vllm.LLM`` on its GPU (``external_launcher``
under several ranks) that shares the device with the trainer (``gpu_memory_utilization`` bounds its KV
cache). The interface is :class:`steprl.rollout.hf.HFEngine`'s ``generate``; the rollouts also carry the
engine's own log-probs of the sampled tokens (``Rollouts.engine_logp``), which the RL module uses for the
``rollout/logprob_diff`` metric, the start-up probe and truncated importance sampling (``tis_cap``).

After every optimiser update the module calls :meth:`VLLMEngine.sync_weights` before the next rollout: the
policy's full weights (gathered from FSDP2 shards, LoRA adapters merged) are loaded into the engine's model
in place, within ``sync_timeout_s``. vLLM is imported lazily, so a CPU install never needs it.
"""
from __future__ import annotations

import concurrent.futures
import os
import tempfile
import time
from dataclasses import dataclass, field

import torch

from steprl.rollout.hf import Sampling
from steprl.rollout.types import Rollouts

EXTRA_HINT = "rollout=vllm needs vLLM on a CUDA machine: pip install 'steprl[vllm]' (or use rollout=hf)"


def import_vllm():
    """``vllm`` or a clear error naming the extra to install."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(EXTRA_HINT) from e
    return vllm


@dataclass
class VLLMEngine(Sampling):
    """Sampling settings (as :class:`HFEngine`) plus the vLLM engine's own.

    ``gpu_memory_utilization``: fraction of the GPU vLLM may take (weights + KV cache; the trainer needs the
    rest). ``max_model_len``: prompt + response tokens (null: max_prompt_tokens + max_new_tokens, or the
    model's). ``enable_sleep_mode``: release the KV cache between rollouts. ``sync_timeout_s``: a weight push
    that takes longer fails the step. ``probe_tol``: mean |logp_trainer - logp_engine| on a fixed prompt
    above which training stops at start-up. ``tis_cap``: truncated importance sampling cap C (null: off).
    """

    gpu_memory_utilization: float = 0.4
    max_model_len: int | None = None
    dtype: str = "bfloat16"
    enforce_eager: bool = False
    enable_sleep_mode: bool = False
    sync_timeout_s: float = 300.0
    probe_tol: float | None = 0.05
    probe_prompt: str = "Question: What is 12 + 30?\nAnswer:"
    tis_cap: float | None = 2.0
    return_logprobs: bool = field(default=True, init=False)

    def __post_init__(self):
        self.check_sampling()
        if not 0 < self.gpu_memory_utilization < 1:
            raise ValueError(f"rollout.gpu_memory_utilization must be in (0, 1), got {self.gpu_memory_utilization}")
        import_vllm()  # fail at instantiation, before any model is loaded
        self._llm = None
        self._version = None
        self._model_dir = None

    # ------------------------------------------------------------------------------------------ engine
    def _build(self, model, tokenizer):
        vllm = import_vllm()
        if not torch.cuda.is_available():
            raise RuntimeError(EXTRA_HINT)
        from steprl.utils import dist as D

        path = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
        if not os.path.isdir(path):  # a model built from config (or a hub id): give vLLM a local copy
            self._model_dir = tempfile.mkdtemp(prefix="steprl-vllm-")
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            base.config.save_pretrained(self._model_dir)
            tokenizer.save_pretrained(self._model_dir)
            # weights come from the first sync_weights; vLLM starts from random ones of the right shapes
            path = self._model_dir
        kw = dict(model=path, tokenizer=path, dtype=self.dtype, gpu_memory_utilization=self.gpu_memory_utilization,
                  enforce_eager=self.enforce_eager, enable_sleep_mode=self.enable_sleep_mode,
                  seed=D.rank(), max_model_len=self.max_model_len or (
                      self.max_prompt_tokens + self.max_new_tokens if self.max_prompt_tokens else None))
        if self._model_dir is not None:
            kw["load_format"] = "dummy"
        if D.is_distributed():  # one engine per training rank, in this process
            kw["distributed_executor_backend"] = "external_launcher"
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the model lives in this process
        try:  # log-probs after temperature scaling, comparable to the trainer's (vLLM >= 0.10.2)
            self._llm = vllm.LLM(logprobs_mode="processed_logprobs", **kw)
        except TypeError:
            self._llm = vllm.LLM(**kw)
        self._version = None

    def _runner_model(self):
        """The engine's torch model when it lives in this process (None where vLLM hides it)."""
        try:
            worker = self._llm.llm_engine.model_executor.driver_worker
            worker = getattr(worker, "worker", worker)  # V1 wraps the worker
            return worker.model_runner.model
        except AttributeError:
            return None

    def sync_weights(self, model, version=None) -> float:
        """Load the policy's current weights into the engine (skipped when ``version`` is unchanged).

        Returns the seconds it took; raises ``TimeoutError`` after ``sync_timeout_s``."""
        if self._llm is None or (version is not None and version == self._version):
            return 0.0
        t0 = time.perf_counter()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        future = pool.submit(self._push, model)
        try:
            future.result(timeout=self.sync_timeout_s)
        except concurrent.futures.TimeoutError as e:
            raise TimeoutError(f"pushing the policy weights to vLLM took more than rollout.sync_timeout_s="
                               f"{self.sync_timeout_s}s") from e
        finally:
            pool.shutdown(wait=False)
        self._version = version
        return time.perf_counter() - t0

    def _push(self, model) -> None:
        if self.enable_sleep_mode:
            self._llm.wake_up(tags=["weights"]) if _accepts_tags(self._llm.wake_up) else self._llm.wake_up()
        target = self._runner_model()
        if target is not None:
            for name, tensor in named_full_weights(model):  # one tensor at a time: no second full copy
                target.load_weights([(name, tensor)])
        else:  # through the workers' RPC (the callable receives the worker)
            weights = list(named_full_weights(model))
            self._llm.collective_rpc(lambda worker: worker.model_runner.model.load_weights(weights))
        self._llm.reset_prefix_cache()

    # ------------------------------------------------------------------------------------------ sampling
    def generate(self, model, tokenizer, prompts: list[str], n: int = 1, greedy: bool = False,
                 generator: torch.Generator | None = None, max_new_tokens: int | None = None,
                 images: list | None = None, processor=None) -> Rollouts:
        """Sample ``n`` responses for each prompt; rows ``i*n .. i*n+n-1`` answer prompt ``i`` (as HFEngine),
        with the engine's log-probs of the sampled tokens in ``engine_logp``."""
        if images is not None and any(len(ims or ()) for ims in images):
            raise NotImplementedError("rollout=vllm does not take image prompts yet; use rollout=hf")
        vllm = import_vllm()
        if self._llm is None:
            self._build(model, tokenizer)
            self.sync_weights(model)
        device = next(model.parameters()).device
        side, tokenizer.truncation_side = tokenizer.truncation_side, "left"
        try:
            enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False,
                            truncation=self.max_prompt_tokens is not None, max_length=self.max_prompt_tokens)
        finally:
            tokenizer.truncation_side = side
        ids, mask = enc["input_ids"], enc["attention_mask"]
        seed = None if generator is None else int(torch.randint(0, 2**31 - 1, (1,), generator=generator,
                                                                device=generator.device))
        params = vllm.SamplingParams(
            n=n, temperature=0.0 if greedy else self.temperature, top_p=1.0 if greedy else self.top_p,
            top_k=-1 if greedy or self.top_k <= 0 else self.top_k, max_tokens=max_new_tokens or self.max_new_tokens,
            min_tokens=self.min_new_tokens, stop=list(self.stop) or None, logprobs=0, seed=seed,
            include_stop_str_in_output=True)
        requests = [{"prompt_token_ids": row[m.bool()].tolist()} for row, m in zip(ids, mask)]
        outputs = self._llm.generate(requests, params, use_tqdm=False)
        rows, lps, finish = [], [], []
        for out in outputs:
            for comp in out.outputs:
                toks = list(comp.token_ids)
                rows.append(toks)
                lps.append(_sampled_logprobs(comp, toks))
                finish.append("stop" if comp.finish_reason == "stop" else "length")
        width = max(1, max(len(r) for r in rows))
        pad = tokenizer.pad_token_id
        response_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        response_mask = torch.zeros_like(response_ids)
        engine_logp = torch.zeros(len(rows), width)
        for i, (r, lp) in enumerate(zip(rows, lps)):
            response_ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            response_mask[i, :len(r)] = 1
            engine_logp[i, :len(lp)] = torch.tensor(lp)
        texts = tokenizer.batch_decode([r for r in rows], skip_special_tokens=True)
        n_rows = len(rows)
        return Rollouts(
            prompt_ids=ids.repeat_interleave(n, 0).to(device), prompt_mask=mask.repeat_interleave(n, 0).to(device),
            response_ids=response_ids.to(device), response_mask=response_mask.to(device),
            loss_mask=response_mask.clone().to(device), step_ids=torch.full_like(response_ids, -1).to(device),
            group_ids=torch.arange(n_rows, device=device) // n, sample_idx=torch.arange(n_rows, device=device) // n,
            texts=texts, finish_reason=finish, engine_logp=engine_logp.to(device))


def _sampled_logprobs(comp, toks: list[int]) -> list[float]:
    """The engine's log-prob of each sampled token (``logprobs=0`` returns just that one per position)."""
    if comp.logprobs is None:
        return [0.0] * len(toks)
    out = []
    for t, entry in zip(toks, comp.logprobs):
        lp = entry.get(t) if entry is not None else None
        val = getattr(lp, "logprob", lp)
        out.append(float(val) if val is not None and val == val else 0.0)  # NaN -> 0
    return out


def _accepts_tags(fn) -> bool:
    import inspect

    try:
        return "tags" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def named_full_weights(model):
    """``(hf_name, full tensor)`` of every weight of ``model`` as a plain HF checkpoint would name it: FSDP2
    ``DTensor`` shards gathered, peft LoRA adapters folded in (``W + scale * B A``, computed on the side: the
    policy's own weights are never modified, so repeated pushes cause no merge/unmerge drift)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    lora = {}
    for mname, mod in base.named_modules():
        if hasattr(mod, "lora_A") and hasattr(mod, "base_layer") and hasattr(mod, "scaling"):
            lora[f"{mname}.base_layer.weight"] = mod
    for name, p in base.state_dict().items():
        if "lora_" in name:
            continue
        t = _full(p).detach()
        mod = lora.get(name)
        if mod is not None and not getattr(mod, "disable_adapters", False):
            for a in mod.active_adapters:
                if a in mod.lora_A:
                    delta = _full(mod.lora_B[a].weight) @ _full(mod.lora_A[a].weight) * mod.scaling[a]
                    t = t + (delta.T if getattr(mod, "fan_in_fan_out", False) else delta).to(t.dtype)
        yield name.replace(".base_layer", ""), t
