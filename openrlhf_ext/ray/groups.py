"""Build every Ray group of a run from the flags, in one place.

    groups = build_groups(args, pretrain)   # after start_ray(num_cpus=cpus_needed(args))
    groups.actor, groups.ref, groups.critic, groups.reward, groups.vllm   # None where the flags need none

(train_colocate.py does exactly this; tests/test_groups.py runs it on a tiny model.)

`--colocate_all_models`: one placement group whose bundles every group shares (each worker asks for
1/k of its bundle, k = number of groups). Otherwise each group gets a placement group of its own.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import ray

from openrlhf_ext.ray.launcher import ActorGroup, create_placement_group
from openrlhf_ext.ray.workers import CriticWorker, PolicyWorker, ReferenceWorker, RewardWorker
from openrlhf_ext.utils.device import on_gpu


@dataclass
class RayGroups:
    """Every Ray group of a run, built in one place (`build_groups`); the controller drives them."""
    actor: ActorGroup  # PolicyWorker: DeepSpeed-trained policy (+ HF generate)
    ref: ActorGroup | None = None  # ReferenceWorker, when --init_kl_coef > 0
    critic: ActorGroup | None = None  # CriticWorker, for --advantage_estimator gae
    reward: ActorGroup | None = None  # RewardWorker, with --reward_pretrain
    vllm: object | None = None  # openrlhf_ext.rollout.vllm_engine.VLLMEngines, with --rollout_backend vllm


def needs_ref(args) -> bool:
    return args.init_kl_coef > 0


def needs_critic(args) -> bool:
    return args.advantage_estimator == "gae"


def build_groups(args, pretrain: str) -> RayGroups:
    world = args.actor_num_nodes * args.actor_num_gpus_per_node
    ref_world = args.ref_num_nodes * args.ref_num_gpus_per_node
    critic_world = args.critic_num_nodes * args.critic_num_gpus_per_node
    use_vllm = args.rollout_backend == "vllm"
    plan = [("actor", world)]
    if needs_ref(args):
        plan.append(("ref", world if args.colocate_all_models else ref_world))
    if needs_critic(args):
        plan.append(("critic", world if args.colocate_all_models else critic_world))
    if args.reward_pretrain:
        plan.append(("reward", world if args.colocate_all_models else ref_world))
    if use_vllm:
        plan.append(("vllm", args.vllm_num_engines * args.vllm_tensor_parallel_size))

    # CPU threads per worker. One by default: for small models the per-op work is tiny, and on a
    # busy machine several spinning OpenMP threads per process made generation 20x slower (measured
    # on 2 cores). Big models on a many-core CPU: raise OPENRLHF_EXT_CPU_THREADS.
    threads = None if on_gpu() else int(os.environ.get("OPENRLHF_EXT_CPU_THREADS", "1"))
    if args.colocate_all_models:
        shared = create_placement_group(max(n for _, n in plan))
        pgs = {name: shared for name, _ in plan}
        share = len(plan)
    else:
        pgs = {name: create_placement_group(n) for name, n in plan}
        share = 1

    grad_accum = args.train_batch_size // (args.micro_train_batch_size * world)
    groups = RayGroups(actor=ActorGroup(PolicyWorker, world, pgs["actor"], share, "actor", threads))
    refs = groups.actor.call("init_model", args, pretrain, grad_accum)
    if needs_ref(args):
        groups.ref = ActorGroup(ReferenceWorker, dict(plan)["ref"], pgs["ref"], share, "ref", threads, distributed=False)
        refs += groups.ref.call("init_model", args, pretrain)
    if needs_critic(args):
        n = dict(plan)["critic"]
        groups.critic = ActorGroup(CriticWorker, n, pgs["critic"], share, "critic", threads)
        refs += groups.critic.call("init_model", args, args.critic_pretrain or pretrain,
                                   args.train_batch_size // (args.micro_train_batch_size * n))
    if args.reward_pretrain:
        groups.reward = ActorGroup(RewardWorker, dict(plan)["reward"], pgs["reward"], share, "reward", threads,
                                   distributed=False)
        refs += groups.reward.call("init_model", args, args.reward_pretrain)
    if use_vllm:
        from openrlhf_ext.rollout.vllm_engine import VLLMEngines

        groups.vllm = VLLMEngines(args, pretrain, pgs["vllm"], share)
    ray.get(refs)
    return groups


def cpus_needed(args) -> int:
    """Logical CPUs Ray must offer for the plan (bundles are logical; the stages take turns)."""
    if args.colocate_all_models:
        return max(os.cpu_count() or 1, args.actor_num_nodes * args.actor_num_gpus_per_node, args.vllm_num_engines)
    n = args.actor_num_nodes * args.actor_num_gpus_per_node
    n += (args.ref_num_nodes * args.ref_num_gpus_per_node) * (needs_ref(args) + bool(args.reward_pretrain))
    n += args.critic_num_nodes * args.critic_num_gpus_per_node * needs_critic(args)
    n += args.vllm_num_engines * args.vllm_tensor_parallel_size * (args.rollout_backend == "vllm")
    return max(os.cpu_count() or 1, n)
