"""The Ray actors that hold models: policy (DeepSpeed, + HF generate), reference, critic, reward.

One process per worker; the controller (openrlhf_ext/trainer/ppo_trainer.py) calls their methods
through `ActorGroup` (openrlhf_ext/ray/launcher.py). Tensors travel as CPU tensors in plain dicts.
"""
from __future__ import annotations

import os
import shutil

import torch

from openrlhf_ext.ray.deepspeed_utils import build_engine, full_weights, init_distributed, setup_dist_env
from openrlhf_ext.ray.update import critic_micro_batch_loss, policy_micro_batch_loss, run_update
from openrlhf_ext.utils.device import compute_device


class BaseWorker:
    """A process of a data-parallel group: rank layout, device, threads, the dist process group."""

    def __init__(self, rank: int, world_size: int, master_addr: str | None, master_port: int | None,
                 num_threads: int | None = None):
        self.rank, self.world_size = rank, world_size
        self.device = compute_device()
        if num_threads:
            # Ray gives a fractional-CPU actor OMP_NUM_THREADS=1; the stages run one after the other,
            # so the active worker may use the node's cores.
            torch.set_num_threads(num_threads)
        if master_addr is not None:
            setup_dist_env(rank, world_size, master_addr, master_port)

    def get_master_addr_port(self) -> tuple[str, int]:
        import ray

        from openrlhf_ext.ray.deepspeed_utils import free_port

        return ray.util.get_node_ip_address(), free_port()

    def set_dist_env(self, master_addr: str, master_port: int) -> bool:
        setup_dist_env(self.rank, self.world_size, master_addr, master_port)
        return True

    def ping(self) -> bool:
        return True


class PolicyWorker(BaseWorker):
    """The actor: DeepSpeed-trained policy; generates (hf backend), gives log-probs + entropy."""

    def init_model(self, args, pretrain: str, grad_accum: int):
        from openrlhf_ext.models.actor import Actor

        init_distributed()
        torch.manual_seed(args.seed + self.rank)
        self.args = args
        model = Actor.from_pretrained(pretrain, bf16=args.bf16, gradient_checkpointing=args.gradient_checkpointing)
        self.engine = build_engine(model.to(self.device), args.actor_learning_rate, args.adam_betas, args.l2,
                                   args.zero_stage, args.micro_train_batch_size, grad_accum, self.world_size,
                                   args.bf16, args.max_norm)
        return True

    def generate(self, prompt_ids: list[list[int]], pad_id: int, eos_id: int | None,
                 seed: int) -> list[tuple[list[int], list[float]]]:
        """(response ids, their rollout log-probs: HF generate's own) of each prompt."""
        from openrlhf_ext.rollout.hf_generate import hf_generate

        torch.manual_seed(seed)
        a = self.args
        return hf_generate(self.engine.module.model, prompt_ids, pad_id, eos_id, a.generate_max_len,
                           a.temperature, a.top_p, batch_size=max(a.micro_rollout_batch_size, 1), device=self.device)

    @torch.no_grad()
    def forward(self, payloads: list[dict], top_k: int = 0) -> list[dict]:
        """Old log-probs and entropy of each experience, and with ``top_k`` > 0 the top-K
        alternatives of the same distributions, from one forward each (`Actor.score`)."""
        self.engine.eval()
        out = []
        for p in payloads:
            # Actor.score on the engine's module: a no-grad forward needs nothing of the engine's own
            # forward (loss scaling, backward hooks); ZeRO-3's parameter hooks sit on the submodules.
            res = self.engine.module.score(p["sequences"].to(self.device), p["attention_mask"].to(self.device),
                                           p["action_mask"].shape[1], temperature=self.args.temperature, top_k=top_k)
            item = {"log_probs": res.log_probs.cpu(), "entropy": res.entropy.cpu()}  # (b, A) each
            if res.alternatives is not None:  # (b, A, K): int32 ids halve what travels back
                item.update(alternative_ids=res.alternatives.ids.int().cpu(),
                            alternative_log_probs=res.alternatives.logprobs.float().cpu())
            out.append(item)
        return out

    def train(self, payloads: list[dict], seed: int) -> dict:
        """PPO epochs over this worker's experiences (`Experience.to_payload` dicts); returns mean stats."""
        return run_update(self.engine, payloads, self.args, policy_micro_batch_loss, seed, self.device)

    def state_dict_bytes(self) -> bytes | None:
        """The full weights as safetensors bytes, for a vLLM sync (None on ranks other than 0).

        Every rank must call it: under ZeRO-3 the weights are gathered collectively first.
        """
        from safetensors.torch import save

        model = self.engine.module.model
        with full_weights(model, self.args.zero_stage):
            if self.rank != 0:
                return None
            sd = model.state_dict()
            # safetensors refuses tensors that share memory: a tied lm_head goes once, under the
            # name that comes first (embed_tokens). Compare the tensors' own addresses, not their
            # storages: ZeRO flattens every parameter into views of one big buffer.
            seen, flat = set(), {}
            for k, v in sd.items():
                key = (v.data_ptr(), tuple(v.shape))
                if key in seen:
                    continue
                seen.add(key)
                flat[k] = v.detach().to("cpu").contiguous().clone()
        return save(flat)

    def save_checkpoint(self, ckpt_dir: str, tag: str, client_state: dict) -> bool:
        self.engine.save_checkpoint(ckpt_dir, tag=tag, client_state=client_state)
        return True

    def load_checkpoint(self, ckpt_dir: str, tag: str) -> dict:
        _, client_state = self.engine.load_checkpoint(ckpt_dir, tag=tag, load_optimizer_states=True,
                                                      load_lr_scheduler_states=True)
        return client_state or {}

    def save_model(self, path: str, tokenizer_path: str) -> bool:
        """Hugging Face folder of the trained policy (+ the tokenizer files), written by rank 0."""
        model = self.engine.module.model
        with full_weights(model, self.args.zero_stage):
            if self.rank == 0:
                model.save_pretrained(path, safe_serialization=True)
        if self.rank == 0:
            for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                         "merges.txt", "generation_config.json", "chat_template.jinja"):
                src = os.path.join(tokenizer_path, name)
                if os.path.isfile(src) and not os.path.exists(os.path.join(path, name)):
                    shutil.copy(src, os.path.join(path, name))
        return True


class ReferenceWorker(BaseWorker):
    """The frozen reference policy for the KL term; plain eval-mode torch (nothing to train)."""

    def init_model(self, args, pretrain: str, grad_accum: int = 1):
        from openrlhf_ext.models.actor import Actor

        self.args = args
        self.model = Actor.from_pretrained(pretrain, bf16=args.bf16).to(self.device).eval()
        return True

    @torch.no_grad()
    def forward(self, payloads: list[dict]) -> list[torch.Tensor]:
        return [self.model(p["sequences"].to(self.device), p["attention_mask"].to(self.device),
                           p["action_mask"].shape[1], temperature=self.args.temperature, with_entropy=False)[0].cpu()
                for p in payloads]


class CriticWorker(BaseWorker):
    """The value model of PPO (`--advantage_estimator gae`), DeepSpeed-trained."""

    def init_model(self, args, pretrain: str, grad_accum: int):
        from openrlhf_ext.models.critic import Critic

        init_distributed()
        self.args = args
        model = Critic.from_pretrained(pretrain, bf16=args.bf16, gradient_checkpointing=args.gradient_checkpointing)
        self.engine = build_engine(model.to(self.device), args.critic_learning_rate, args.adam_betas, args.l2,
                                   args.zero_stage, args.micro_train_batch_size, grad_accum, self.world_size,
                                   args.bf16, args.max_norm)
        return True

    @torch.no_grad()
    def forward(self, payloads: list[dict]) -> list[torch.Tensor]:
        self.engine.eval()
        return [self.engine(p["sequences"].to(self.device), p["attention_mask"].to(self.device),
                            p["action_mask"].shape[1]).cpu() for p in payloads]

    def train(self, payloads: list[dict], seed: int) -> dict:
        return run_update(self.engine, payloads, self.args, critic_micro_batch_loss, seed, self.device)

    def save_checkpoint(self, ckpt_dir: str, tag: str, client_state: dict) -> bool:
        self.engine.save_checkpoint(ckpt_dir, tag=tag, client_state=client_state)
        return True

    def load_checkpoint(self, ckpt_dir: str, tag: str) -> dict:
        _, client_state = self.engine.load_checkpoint(ckpt_dir, tag=tag)
        return client_state or {}


class RewardWorker(BaseWorker):
    """A reward model (`--reward_pretrain`): a one-label sequence-classification head, score at the last token."""

    def init_model(self, args, pretrain: str, grad_accum: int = 1):
        from transformers import AutoModelForSequenceClassification

        self.model = AutoModelForSequenceClassification.from_pretrained(
            pretrain, num_labels=1, dtype=torch.bfloat16 if args.bf16 else torch.float32).to(self.device).eval()
        return True

    @torch.no_grad()
    def forward(self, payloads: list[dict]) -> list[torch.Tensor]:
        """One score per response, (B,) float32. Hugging Face pools at the rightmost non-pad token,
        which is the response's last token in our layout (needs pad_token_id != eos in its config)."""
        return [self.model(input_ids=p["sequences"].to(self.device),
                           attention_mask=p["attention_mask"].to(self.device)).logits.float().view(-1).cpu()
                for p in payloads]
