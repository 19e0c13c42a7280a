"""train_colocate.py's flags: readable --help, and bad combinations stopped at start-up with a
sentence that says what to change (before Ray or DeepSpeed start)."""
from __future__ import annotations

import importlib.util

import pytest

from openrlhf_ext.cli.train_args import EMBEDDED_DEFAULTS, build_train_parser, parse_train_args


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        parse_train_args(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_help_lists_openrlhf_and_trajectory_flags():
    text = build_train_parser().format_help()
    for flag in ("--pretrain", "--remote_rm_url", "--advantage_estimator", "--colocate_all_models",
                 "--rollout_backend", "--load_checkpoint", "--policy_loss_entropy_top_ratio",
                 "--save_trajectories", "--high_entropy_token_ratio", "--vllm_enable_sleep", "--use_wandb"):
        assert flag in text


def test_probe_flags_need_the_saver_and_positive_counts(capsys):
    err = _error(["--pretrain", "m", "--trajectory_probe_prompts", "4"], capsys)
    assert "probe prompts are saved by the trajectory saver: add --save_trajectories" in err
    err = _error(["--pretrain", "m", "--save_trajectories", "--trajectory_probe_prompts", "4",
                  "--trajectory_probe_samples", "0", "--trajectory_probe_steps", "0"], capsys)
    assert "--trajectory_probe_samples must be at least 1" in err and "--trajectory_probe_steps must be at least 1" in err
    args = parse_train_args(["--pretrain", "m", "--save_trajectories", "--trajectory_probe_data", "probes.jsonl"])
    assert (args.trajectory_probe_prompts, args.trajectory_probe_steps, args.trajectory_probe_samples) == (0, 10, 4)
    assert (args.save_top_k_alternatives, args.alternatives_for) == (5, "high")


def test_batch_sizes_that_do_not_divide(capsys):
    err = _error(["--pretrain", "m", "--rollout_batch_size", "4", "--n_samples_per_prompt", "4",
                  "--micro_rollout_batch_size", "16", "--train_batch_size", "12", "--micro_train_batch_size", "4"], capsys)
    assert "--train_batch_size (12) must divide the 16 responses" in err
    err = _error(["--pretrain", "m", "--rollout_batch_size", "4", "--n_samples_per_prompt", "4",
                  "--micro_rollout_batch_size", "5", "--train_batch_size", "16"], capsys)
    assert "--micro_rollout_batch_size (5) must divide" in err


def test_ratio_out_of_range_and_group_estimator_without_groups(capsys):
    err = _error(["--pretrain", "m", "--policy_loss_entropy_top_ratio", "1.5"], capsys)
    assert "argument --policy_loss_entropy_top_ratio: ratio must be in (0, 1]" in err
    err = _error(["--pretrain", "m", "--n_samples_per_prompt", "1", "--train_batch_size", "8",
                  "--micro_train_batch_size", "8", "--advantage_estimator", "rloo"], capsys)
    assert "--n_samples_per_prompt to 2 or more" in err
    err = _error(["--pretrain", "m", "--use_kl_loss"], capsys)
    assert "--init_kl_coef" in err


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_asked_for_but_missing(capsys):
    err = _error(["--rollout_backend", "vllm"], capsys)
    assert "vllm is not installed" in err and "--rollout_backend hf" in err
    assert parse_train_args(["--rollout_backend", "auto"]).rollout_backend == "hf"


def test_embedded_defaults_never_override_given_flags():
    args = parse_train_args(["--generate_max_len", "5", "--max_steps", "3"])
    assert args.embedded_model and args.generate_max_len == 5 and args.max_steps == 3
    assert args.rollout_batch_size == EMBEDDED_DEFAULTS["rollout_batch_size"]
    args = parse_train_args(["--pretrain", "some/model", "--train_batch_size", "32"])
    assert not args.embedded_model and args.generate_max_len == 1024  # OpenRLHF's default, untouched


def test_kv_cache_size_in_bytes(capsys):
    """--vllm_kv_cache_memory takes a size with a binary unit; anything else is refused at start-up."""
    args = parse_train_args(["--pretrain", "m", "--rollout_backend", "hf", "--vllm_kv_cache_memory", "1.5GiB"])
    assert args.vllm_kv_cache_memory == 3 << 29
    err = _error(["--pretrain", "m", "--vllm_kv_cache_memory", "12XB"], capsys)
    assert "--vllm_kv_cache_memory" in err and "512MiB" in err
