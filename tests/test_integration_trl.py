"""TRL's GRPOTrainer with one added line writes our run folder: real TRL, real model, CPU.

    trainer = GRPOTrainer(...)
    save_trajectories(trainer, mark_high_entropy_tokens=True)
    trainer.train()
"""
import json
import math
import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from openrlhf_ext.integrations.trl import TRLTrajectoryHook, save_trajectories  # noqa: E402
from openrlhf_ext.models.embedded import embedded_model_path  # noqa: E402
from openrlhf_ext.trajectory import load_trajectories  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEMPERATURE = 0.7  # not 1, so an entropy taken at the wrong temperature shows
ROWS = 8  # per generation round: 2 prompts x 4 generations, in 2 micro-batches

# How a round's entropies are obtained, and the TRL layout that leads there:
MODES = {
    # a round is the 2 micro-batches of one optimizer step: kept from compute_loss
    "loss": {"gradient_accumulation_steps": 2},
    # a round feeds 2 optimizer steps: from TRL's old-log-prob forward at generation time
    "generation": {"gradient_accumulation_steps": 1},
    # the one forward the hook adds where TRL computes no entropies (0.19, Liger): forced on 1.x
    "own_forward": {"gradient_accumulation_steps": 2},
}


def correct(prompts, completions, label, **_):
    return [float(str(lab) in c) for c, lab in zip(completions, label)]


def brevity(completions, **_):
    return [-len(c) / 10 for c in completions]


def prompts():
    return datasets.Dataset.from_list([{"prompt": f"{a}+{b}=", "label": str(a + b)} for a in range(1, 5) for b in range(4)])


def read_manifest(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def make_trainer(out, max_rounds=2, **config):
    """GRPOTrainer on the embedded model; a generation round is 2 micro-batches of ROWS / 2."""
    path = embedded_model_path()
    steps_per_round = 2 // config.get("gradient_accumulation_steps", 1)
    args = trl.GRPOConfig(**{
        "output_dir": str(out), "use_cpu": True, "report_to": [], "save_strategy": "no", "logging_steps": 1,
        "max_steps": max_rounds * steps_per_round, "num_generations": 4, "per_device_train_batch_size": ROWS // 2,
        "steps_per_generation": 2, "max_completion_length": 8, "temperature": TEMPERATURE,
        "learning_rate": 1e-3, "seed": 0, "bf16": False, "reward_weights": [1.0, 0.5],
        "disable_dropout": True,  # the recomputation below runs in eval mode, whatever model this is
        **config,
    })
    return trl.GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), args=args,
        reward_funcs=[correct, brevity], train_dataset=prompts(), processing_class=AutoTokenizer.from_pretrained(path),
    )


def train(out, mode, save=True, **flags):
    """Two generation rounds in the layout of ``mode``; with ``save``, saving trajectories."""
    trainer = make_trainer(out, **MODES[mode])
    saver = None
    if save:
        saver = save_trajectories(trainer, mark_high_entropy_tokens=True, num_trajectories_to_save=ROWS, **flags)
        hook = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TRLTrajectoryHook))
        if mode == "own_forward":
            hook.reuse_loss_entropies = False
    trainer.train()
    return trainer, saver


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One saving run per mode, made on first use."""
    cache = {}

    def get(mode):
        if mode not in cache:
            cache[mode] = train(tmp_path_factory.mktemp(mode), mode)
        return cache[mode]

    return get


def recompute(records, temperature):
    """Entropy of softmax(logits / T) and the sampled token's log-prob, from a plain HF forward of
    prompt + completion under the initial weights."""
    model = AutoModelForCausalLM.from_pretrained(embedded_model_path(), dtype=torch.float32).eval()
    out = []
    for rec in records:
        ids = torch.tensor([[t["id"] for t in rec["generated_tokens"]]])
        n = len(rec["pure_generated_tokens"])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -n - 1:-1].float() / temperature  # (n, V)
        logp = torch.log_softmax(logits, -1)
        entropy = -(logp.exp() * logp).sum(-1)
        out.append((entropy, logp.gather(-1, ids[0, -n:, None])[:, 0]))
    return out


def test_two_rounds_make_a_run_folder_that_validates(runs):
    trainer, saver = runs("loss")
    assert saver.out_dir == Path(trainer.args.output_dir) / "trajectories"
    records = load_trajectories(saver.out_dir)  # strict: raises on any format problem
    res = subprocess.run([sys.executable, "-m", "openrlhf_ext.trajectory", "validate", str(saver.out_dir)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    manifest = read_manifest(saver.out_dir / "manifest.jsonl")
    assert [e["global_step"] for e in manifest] == [1, 2]
    assert [e["num_responses"] for e in manifest] == [ROWS, ROWS]
    assert sorted({r["global_step"] for r in records}) == [1, 2]
    assert all(r["label"] == str(sum(map(int, r["prompt_text"][:-1].split("+")))) for r in records)  # "3+1=": "4"


@pytest.mark.parametrize("mode", MODES)
def test_first_round_entropies_are_the_initial_weights_at_the_sampling_temperature(runs, mode):
    _, saver = runs(mode)
    records = [r for r in load_trajectories(saver.out_dir) if r["global_step"] == 1]
    assert len(records) == ROWS
    for rec, (entropy, logp) in zip(records, recompute(records, TEMPERATURE)):
        saved = torch.tensor([t["entropy_score"] for t in rec["pure_generated_tokens"]])
        torch.testing.assert_close(saved, entropy, atol=1e-4, rtol=1e-4)
        if mode != "own_forward":  # the added forward computes entropies only
            torch.testing.assert_close(torch.tensor([t["logprob"] for t in rec["pure_generated_tokens"]]), logp,
                                       atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_saving_does_not_change_training(runs, tmp_path, mode):
    with_saver, _ = runs(mode)
    without, _ = train(tmp_path, mode, save=False)
    losses = lambda t: [(h["loss"], h["grad_norm"]) for h in t.state.log_history if "loss" in h]  # noqa: E731
    assert losses(with_saver) == losses(without) and len(losses(without)) == with_saver.state.global_step
    for a, b in zip(with_saver.model.parameters(), without.model.parameters()):
        assert torch.equal(a, b)


def test_token_texts_join_to_the_decoded_text(runs):
    trainer, saver = runs("loss")
    tok = trainer.processing_class
    for rec in load_trajectories(saver.out_dir):
        for tokens, text in ((rec["generated_tokens"], rec["generated_text"]),
                             (rec["pure_generated_tokens"], rec["pure_generated_text"])):
            assert "".join(t["text"] for t in tokens) == text == tok.decode([t["id"] for t in tokens])
        assert rec["prompt_text"] in rec["generated_text"]


def test_marks_are_the_top_ratio_of_the_whole_round(runs):
    _, saver = runs("loss")
    records = load_trajectories(saver.out_dir)
    for entry in read_manifest(saver.out_dir / "manifest.jsonl"):
        tokens = [t for r in records if r["global_step"] == entry["global_step"] for t in r["pure_generated_tokens"]]
        scores = sorted((t["entropy_score"] for t in tokens), reverse=True)
        k = max(1, math.ceil(Decimal(repr(0.2)) * len(scores)))  # FORMAT.md's rule, every row saved here
        assert entry["num_response_tokens"] == len(tokens)
        assert entry["high_entropy_threshold"] == pytest.approx(scores[k - 1])
        assert [t["high_entropy"] for t in tokens] == [t["entropy_score"] >= scores[k - 1] for t in tokens]


def test_rewards_are_trls_weighted_sum_and_advantages_its_group_normalisation(runs):
    trainer, saver = runs("loss")
    tok = trainer.processing_class
    records = load_trajectories(saver.out_dir)
    for rec in records:
        completion = tok.decode([t["id"] for t in rec["pure_generated_tokens"]], skip_special_tokens=True)
        info = rec["info"]
        assert info["reward/correct"] == correct([rec["prompt_text"]], [completion], [rec["label"]])[0]
        assert info["reward/brevity"] == pytest.approx(brevity([completion])[0])
        assert info["reward"] == pytest.approx(info["reward/correct"] + 0.5 * info["reward/brevity"])
    for step in (1, 2):
        groups = {}
        for rec in (r for r in records if r["global_step"] == step):
            groups.setdefault(rec["group_index"], []).append(rec)
        assert sorted(len(g) for g in groups.values()) == [4, 4] and all(len({r["prompt_text"] for r in g}) == 1
                                                                         for g in groups.values())
        for group in groups.values():
            rewards = torch.tensor([r["info"]["reward"] for r in group])
            expected = (rewards - rewards.mean()) / (rewards.std() + 1e-4)
            torch.testing.assert_close(torch.tensor([r["advantages"] for r in group]), expected, atol=1e-5, rtol=1e-5)


def test_a_round_over_several_steps_is_numbered_by_the_first_step_it_feeds(runs, tmp_path):
    _, saver = runs("generation")  # a round feeds 2 steps: rounds generated at global steps 0 and 2
    assert [e["global_step"] for e in read_manifest(saver.out_dir / "manifest.jsonl")] == [1, 3]
    # trajectory_save_steps=4 keeps the rounds that feed a multiple of 4: round 3 (steps 3-4), not 1 (1-2)
    _, saver = train(tmp_path / "every4", "generation", trajectory_save_steps=4)
    assert [e["global_step"] for e in read_manifest(saver.out_dir / "manifest.jsonl")] == [3]


def test_flags_are_checked_like_the_command_line(tmp_path):
    trainer = make_trainer(tmp_path)
    with pytest.raises(TypeError, match=r"num_trajectories_to_sav\b.*valid: .*num_trajectories_to_save"):
        save_trajectories(trainer, num_trajectories_to_sav=4)
    with pytest.raises(ValueError, match="high_entropy_token_ratio"):
        save_trajectories(trainer, high_entropy_token_ratio=1.5)
    with pytest.raises(ValueError, match="trajectory_sampling"):
        save_trajectories(trainer, trajectory_sampling="best")
    saver = save_trajectories(trainer, trajectory_dir=str(tmp_path / "elsewhere"))
    assert saver.out_dir == tmp_path / "elsewhere"
    with pytest.raises(RuntimeError, match="already"):
        save_trajectories(trainer)


TWO_PROCESSES = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, sys.argv[2])
    torch.set_num_threads(1)
    from tests import test_integration_trl as t
    t.ROWS = 4  # per process: the round is 8 rows over 2 processes
    trainer = t.make_trainer(sys.argv[1], **t.MODES["loss"])
    t.save_trajectories(trainer, mark_high_entropy_tokens=True, num_trajectories_to_save=8)
    trainer.train()
""")


@pytest.mark.slow
def test_two_processes_write_one_folder_with_the_whole_round(tmp_path):
    script = tmp_path / "two.py"
    script.write_text(TWO_PROCESSES)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path / "out"), str(ROOT)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = tmp_path / "out" / "trajectories"
    manifest = read_manifest(out / "manifest.jsonl")
    assert [(e["global_step"], e["num_responses"], e["num_saved"]) for e in manifest] == [(1, 8, 8), (2, 8, 8)]
    records = load_trajectories(out)
    first = [r for r in records if r["global_step"] == 1]
    assert sorted({r["experience_index"] for r in first}) == [0, 1]  # one slice per process
    for rec, (entropy, _) in zip(first, recompute(first, TEMPERATURE)):
        torch.testing.assert_close(torch.tensor([t["entropy_score"] for t in rec["pure_generated_tokens"]]), entropy,
                                   atol=1e-4, rtol=1e-4)
    for entry in manifest:  # the threshold is the whole round's, both processes' tokens
        scores = sorted((t["entropy_score"] for r in records if r["global_step"] == entry["global_step"]
                         for t in r["pure_generated_tokens"]), reverse=True)
        k = max(1, math.ceil(Decimal(repr(0.2)) * len(scores)))
        assert entry["high_entropy_threshold"] == pytest.approx(scores[k - 1])


def test_a_resumed_run_drops_the_steps_after_its_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=3, save_strategy="steps", save_steps=1, **MODES["loss"])
    saver = save_trajectories(trainer, num_trajectories_to_save=2)
    trainer.train()  # "crashes" after step 3, its last checkpoint kept is step 1's
    assert [e["global_step"] for e in read_manifest(saver.out_dir / "manifest.jsonl")] == [1, 2, 3]
    resumed = make_trainer(tmp_path, max_steps=2, **MODES["loss"])
    saver = save_trajectories(resumed, num_trajectories_to_save=2)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    assert [e["global_step"] for e in read_manifest(saver.out_dir / "manifest.jsonl")] == [1, 2]
    assert sorted(p.name for p in saver.out_dir.glob("trajectories_step_*.json")) == [
        "trajectories_step_1.json", "trajectories_step_2.json"]
