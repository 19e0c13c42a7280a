"""The trajectory flags: defaults, and bad values refused with the flag named."""
import argparse

import pytest

from openrlhf_ext.trajectory import add_trajectory_args


def parse(*argv):
    return add_trajectory_args(argparse.ArgumentParser(prog="train")).parse_args(list(argv))


def test_defaults():
    a = parse()
    assert (a.save_trajectories, a.num_trajectories_to_save, a.mark_high_entropy_tokens) == (False, 10, False)
    assert (a.high_entropy_token_ratio, a.trajectory_save_steps, a.trajectory_sampling) == (0.2, 1, "groups")
    assert a.trajectory_dir is None and not a.save_entropy_trace and not a.trajectory_strict


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--high_entropy_token_ratio", "0"], "--high_entropy_token_ratio"),
        (["--high_entropy_token_ratio", "1.5"], "--high_entropy_token_ratio"),
        (["--high_entropy_token_ratio", "lots"], "--high_entropy_token_ratio"),
        (["--num_trajectories_to_save", "-1"], "--num_trajectories_to_save"),
        (["--trajectory_save_steps", "0"], "--trajectory_save_steps"),
        (["--trajectory_sampling", "best"], "--trajectory_sampling"),
        (["--high_entropy_scope", "batch"], "--high_entropy_scope"),
    ],
)
def test_bad_values_are_argparse_errors_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
