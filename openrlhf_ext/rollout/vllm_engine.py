"""Rollouts with vLLM (`--rollout_backend vllm`): engines in Ray actors, weights synced after each update.

    >>> engines = VLLMEngines(args, pretrain, placement_group, share=2)
    >>> pairs = engines.generate(prompt_ids, seed=1)          # token ids in: (ids, their rollout log-probs) out
    >>> engines.load_weights(safetensors_bytes)                # after each training step

The rollout log-probs (FORMAT.md's `rollout_logprob`) are vLLM's own sample log-probs:
`SamplingParams(logprobs=0)` returns the sampled token's, and the engine is built with
`logprobs_mode="processed_logprobs"`, so they are taken after temperature and top-p, from the
distribution vLLM sampled from (its default, "raw_logprobs", is the model's logits before them).

Token ids go in, not text: vLLM and the trainer then see one tokenization, whatever vLLM's
tokenizer class would have done to the text (such as re-imposing a model family's pre-tokenizer,
qwen2's, on our tokenizer.json).

Weight sync (measured on vLLM 0.32 CPU): a `worker_extension_cls` method reached through
`llm.collective_rpc`. Its name must not be `update_weights` (the CPU worker has one). The weights
travel as safetensors bytes, because with the multiprocess engine tensors reach the worker as lists.
`model.load_weights` fails once the CPU worker has repacked its linear weights, so the worker's
`reload_weights(weights_iterator=..., is_checkpoint_format=True)` does the load; a tied lm_head
then still computes with its old packed copy until its CPU GEMM is dispatched again, which we do.
"""
from __future__ import annotations

import os

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from openrlhf_ext.utils.device import on_gpu


class WeightSyncExtension:
    """Mixed into vLLM's worker (`worker_extension_cls`): methods callable with collective_rpc."""

    def load_trained_weights(self, blob: bytes) -> int:
        """Load safetensors bytes of the full model; returns the number of tensors loaded."""
        from safetensors.torch import load

        weights = load(blob)
        self.reload_weights(weights_iterator=iter(weights.items()), is_checkpoint_format=True)
        self._redispatch_cpu_embedding_gemms()
        return len(weights)

    def _redispatch_cpu_embedding_gemms(self) -> None:
        # On CPU, vLLM packs a GEMM copy of each linear weight at load time. reload_weights repacks
        # the linear layers but an lm_head tied to the embedding keeps its stale copy.
        if self.device.type != "cpu":
            return
        from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
        from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

        for module in self.model_runner.get_model().modules():
            if isinstance(module, VocabParallelEmbedding) and hasattr(module, "cpu_linear"):
                dispatch_cpu_unquantized_gemm(module, remove_weight=False)


def check_kv_cache(pretrain: str, bf16: bool, gpu_memory_utilization: float, kv_cache_memory_bytes: int | None,
                   max_model_len: int, num_seqs: int) -> int | None:
    """The KV cache size to give vLLM (bytes, or None for its `gpu_memory_utilization`), after
    checking that it fits this machine; raises RuntimeError with the flag to change when it does not.

    On CPU the size is always in bytes: `--vllm_kv_cache_memory`, else room for the engine's
    rollout batch (rollout/kv_cache.py). `VLLM_CPU_KVCACHE_SPACE` (GiB), vLLM's own knob, wins
    over both when set, as it does inside vLLM.
    """
    from openrlhf_ext.rollout import kv_cache

    if on_gpu():
        if kv_cache_memory_bytes is None:
            import torch

            free, total = torch.cuda.mem_get_info()
            problem = kv_cache.gpu_memory_problem(gpu_memory_utilization, free, total)
            if problem:
                raise RuntimeError(problem)
        return kv_cache_memory_bytes
    if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        kv_cache_memory_bytes = int(os.environ["VLLM_CPU_KVCACHE_SPACE"]) << 30
    elif kv_cache_memory_bytes is None:
        per_token = kv_cache.model_kv_bytes_per_token(pretrain, bf16)
        kv_cache_memory_bytes = kv_cache.default_cpu_kv_cache_bytes(per_token, max_model_len, num_seqs)
    node, total, available = kv_cache.cpu_node_memory()
    problem = kv_cache.cpu_kv_cache_problem(kv_cache_memory_bytes, node, available, total)
    if problem:
        raise RuntimeError(problem)
    return kv_cache_memory_bytes


class LLMRayActor:
    """One vLLM engine in a Ray actor."""

    def __init__(self, pretrain: str, seed: int, tensor_parallel_size: int, gpu_memory_utilization: float,
                 enable_sleep_mode: bool, bf16: bool, max_model_len: int, kv_cache_memory_bytes: int | None = None,
                 num_seqs: int = 1):
        # In-process engine core: starts in ~3 s instead of ~25 s on CPU, and no nested processes
        # inside the Ray actor.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # not an INFO line per weight sync
        kv_cache_memory_bytes = check_kv_cache(pretrain, bf16, gpu_memory_utilization, kv_cache_memory_bytes,
                                               max_model_len, num_seqs)
        from vllm import LLM

        self.sleep_enabled = enable_sleep_mode and on_gpu()  # sleep mode frees GPU memory; none on CPU
        sizing = {} if kv_cache_memory_bytes is None else {"kv_cache_memory_bytes": kv_cache_memory_bytes}
        self.llm = LLM(
            model=pretrain, seed=seed, tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization, enable_sleep_mode=self.sleep_enabled,
            dtype="bfloat16" if bf16 else "float32", max_model_len=max_model_len,
            enforce_eager=not on_gpu(), distributed_executor_backend="uni" if tensor_parallel_size == 1 else "mp",
            worker_extension_cls="openrlhf_ext.rollout.vllm_engine.WeightSyncExtension",
            # sample log-probs at the sampling temperature (after top-p), not the raw logits' ones
            logprobs_mode="processed_logprobs",
            skip_tokenizer_init=False, **sizing,
        )

    def generate(self, prompt_ids: list[list[int]], temperature: float, top_p: float, max_tokens: int,
                 seed: int) -> list[tuple[list[int], list[float]]]:
        """(token ids, their sample log-probs) of one response per prompt."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed + i,
                                 logprobs=0)  # the sampled token's log-prob only
                  for i in range(len(prompt_ids))]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params, use_tqdm=False)
        return [(list(o.outputs[0].token_ids),
                 [lp[t].logprob for lp, t in zip(o.outputs[0].logprobs, o.outputs[0].token_ids)]) for o in outs]

    def load_weights(self, blob: bytes) -> int:
        return self.llm.collective_rpc("load_trained_weights", args=(blob,))[0]

    def sleep(self) -> None:
        if self.sleep_enabled:
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self.sleep_enabled:
            self.llm.wake_up()


class VLLMEngines:
    """`--vllm_num_engines` engines; prompts are split evenly over them."""

    def __init__(self, args, pretrain: str, pg, share: int = 1):
        self.args = args
        frac = 1.0 / share
        res = {"num_gpus": frac, "num_cpus": frac} if on_gpu() else {"num_cpus": frac}
        actor_cls = ray.remote(LLMRayActor)
        tp = args.vllm_tensor_parallel_size
        num_seqs = -(-args.rollout_batch_size * args.n_samples_per_prompt // args.vllm_num_engines)  # per engine
        self.engines = [
            actor_cls.options(
                **res,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=i * tp),
            ).remote(pretrain, args.seed + i, tp, args.vllm_gpu_memory_utilization, args.vllm_enable_sleep,
                     args.bf16, args.prompt_max_len + args.generate_max_len, args.vllm_kv_cache_memory, num_seqs)
            for i in range(args.vllm_num_engines)
        ]
        ray.get([e.__ray_ready__.remote() for e in self.engines])

    def generate(self, prompt_ids: list[list[int]], seed: int) -> list[tuple[list[int], list[float]]]:
        """(token ids, vLLM's sample log-probs) of one response per prompt, in prompt order."""
        a, n = self.args, len(self.engines)
        shards = [prompt_ids[len(prompt_ids) * i // n: len(prompt_ids) * (i + 1) // n] for i in range(n)]
        outs = ray.get([e.generate.remote(s, a.temperature, a.top_p, a.generate_max_len, seed * 100_003 + i * 10_007)
                        for i, (e, s) in enumerate(zip(self.engines, shards))])
        return [r for o in outs for r in o]

    def load_weights(self, blob: bytes) -> None:
        ref = ray.put(blob)  # one copy in the object store for every engine
        ray.get([e.load_weights.remote(ref) for e in self.engines])

    def sleep(self) -> None:
        ray.get([e.sleep.remote() for e in self.engines])

    def wake_up(self) -> None:
        ray.get([e.wake_up.remote() for e in self.engines])
