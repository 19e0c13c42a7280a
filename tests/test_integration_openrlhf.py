"""The upstream OpenRLHF drop-in: its actor mixin saves each step's experiences, gathered from
every rank, with the entropy of the sampling distribution taken from the old-log-prob pass.

Upstream's ``PolicyModelActor`` cannot be imported on a CPU machine (``openrlhf.models`` imports
flash_attn), so the mixin runs here on ``CPUPolicyActor``: the few methods it relies on, written
as upstream's are (0.11.2 ``trainer/ray/ppo_actor.py`` ``PolicyModelActor`` and
``models/actor.py`` ``Actor.forward``), with the real embedded model. The experiences are upstream's
own ``Experience`` objects; two ranks talk through torch.distributed (gloo) as DeepSpeed's do.
"""
import json
import os
import socket
import types

import pytest
import torch

from openrlhf_ext.integrations.common import ray_actor_class
from openrlhf_ext.integrations.openrlhf import TrajectoryActorMixin, _real_rows, trajectory_policy_actor
from openrlhf_ext.trajectory import load_trajectories
from openrlhf_ext.trajectory.files import read_manifest
from openrlhf_ext.trajectory.marks import top_count
from tests import rollouts

Experience = pytest.importorskip(
    "openrlhf.trainer.ppo_utils.experience", reason="upstream OpenRLHF (pip install --no-deps openrlhf pylatexenc)"
).Experience

TEMPERATURE = 0.7
FLAGS = dict(save_trajectories=True, mark_high_entropy_tokens=True, high_entropy_token_ratio=0.2,
             num_trajectories_to_save=8)


class CPUPolicyActor:
    """Upstream ``PolicyModelActor``'s interface on the CPU: what ``init_model_from_pretrained``
    leaves (``actor.model``, ``tokenizer``, ``checkpoint_states``), ``forward`` computing the old
    log-probs (B, S - 1)[-A:] as ``Actor.forward`` does (logits to float32, divided in place by the
    temperature after the model, as 0.11.2 does), and ``append`` / ``fit`` on a replay buffer."""

    def init_model_from_pretrained(self, strategy, pretrain, max_steps=None, vllm_engines=None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.strategy, self.buffer, self.fits = strategy, [], 0
        self.actor = types.SimpleNamespace(model=AutoModelForCausalLM.from_pretrained(pretrain).eval())
        self.tokenizer = AutoTokenizer.from_pretrained(pretrain)
        self.checkpoint_states = {}

    @torch.no_grad()
    def forward(self, sequences, action_mask=None, attention_mask=None):
        position_ids = attention_mask.long().cumsum(-1) - 1
        position_ids.masked_fill_(attention_mask == 0, 1)
        output = self.actor.model(sequences, attention_mask=attention_mask, position_ids=position_ids)
        output["logits"] = output["logits"].to(torch.float32)
        output["logits"].div_(self.strategy.args.rollout.temperature)  # in place, after the model
        rolled = torch.roll(sequences, shifts=-1, dims=1)
        log_probs = torch.log_softmax(output["logits"], -1).gather(-1, rolled[..., None])[..., 0][:, :-1]
        return log_probs[:, -action_mask.shape[1] :] * action_mask.float()

    def append(self, experience):
        self.buffer.append(experience)

    def fit(self, kl_ctl: float = 0):
        self.fits += 1
        self.buffer.clear()
        return {}


def upstream_args(save_path):
    """0.11's nested args, as ``hierarchize`` makes them."""
    ns = types.SimpleNamespace
    return ns(rollout=ns(temperature=TEMPERATURE), ds=ns(ring_attn_size=1, tensor_parallel_size=1),
              ckpt=ns(output_dir=str(save_path)), train=ns(seed=5))


def _rank_main(rank, world, folder, port):
    """One actor rank; the controller's calls are replayed as upstream's ``train_step`` makes them."""
    import torch.distributed as dist

    from openrlhf_ext.models.embedded import embedded_model_path

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    actor = type("Actor", (TrajectoryActorMixin, CPUPolicyActor), {"trajectory_flags": FLAGS})()
    actor.init_model_from_pretrained(types.SimpleNamespace(args=upstream_args(folder)), embedded_model_path())
    for step in (1, 2):
        ro = torch.load(os.path.join(folder, f"rollouts_{step}.pt"), weights_only=False)
        exps = rollouts.upstream_experiences(ro, micro=2, Experience=Experience)  # 4 micro-batches
        mine = exps[2 * rank : 2 * rank + 2]  # async_run_method_batch: one chunk per rank
        for e in mine:  # make_experience: the old log-probs
            e.action_log_probs = actor.forward(e.sequences, e.action_mask, e.attention_mask)
        del e.action_entropy  # the controller never has it: the actor computes its own
        # step 2: balance_experiences (dynamic batching) sends each rank the other's experiences
        for e in mine if step == 1 else exps[2 * (1 - rank) : 2 * (1 - rank) + 2]:
            e.__dict__.pop("action_entropy", None)
            actor.append(e)
        actor.fit(0.0)
    assert actor.fits == 2
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two ranks, two steps; returns (folder, rollouts of each step, tokenizer)."""
    import torch.multiprocessing as mp

    model, tok = rollouts.load_embedded()
    folder = tmp_path_factory.mktemp("openrlhf")
    ros = {}
    for step in (1, 2):
        ros[step] = rollouts.sample(model, tok, n_prompts=4, n_samples=2, temperature=TEMPERATURE, seed=step)
        torch.save(ros[step], folder / f"rollouts_{step}.pt")
    mp.spawn(_rank_main, args=(2, str(folder), _free_port()), nprocs=2, join=True)
    return folder, ros, tok


def test_each_step_is_saved_once_from_every_rank(run):
    folder, ros, _ = run
    out = folder / "trajectories"
    assert sorted(p.name for p in out.glob("trajectories_step_*.json")) == ["trajectories_step_1.json",
                                                                             "trajectories_step_2.json"]
    load_trajectories(out)  # strict
    manifest = read_manifest(out / "manifest.jsonl")
    assert [m["global_step"] for m in manifest] == [1, 2]
    assert all(m["num_responses"] == 8 == m["num_saved"] for m in manifest)  # both ranks' responses
    assert json.loads((out / "summary.json").read_text())["latest_step"] == 2


def test_records_carry_the_sampling_entropy_and_lossless_texts(run):
    """Step 2's rows reached ``append`` on the rank that did not run their forward: their entropy
    came from the extra pass, and equals the others'."""
    folder, ros, tok = run
    for step in (1, 2):
        ro = ros[step]
        expected = {(tuple(p), tuple(r)): i for i, (p, r) in enumerate(zip(ro.prompt_ids, ro.response_ids))}
        records = load_trajectories(folder / "trajectories" / f"trajectories_step_{step}.json")
        for rec in records:
            ids = [t["id"] for t in rec["generated_tokens"]]
            n_p = sum(1 for t in rec["generated_tokens"] if t.get("prompt"))
            i = expected[(tuple(ids[:n_p]), tuple(ids[n_p:]))]
            assert rec["prompt_text"] == ro.prompts[i]
            assert rec["generated_text"] == tok.decode(ids) == "".join(t["text"] for t in rec["generated_tokens"])
            assert rec["pure_generated_text"] == tok.decode(ro.response_ids[i])
            ent = [t["entropy_score"] for t in rec["pure_generated_tokens"]]
            assert ent == pytest.approx(ro.entropy[i].tolist(), abs=1e-4)  # at the rollout temperature
            lp = [t["logprob"] for t in rec["pure_generated_tokens"]]
            assert lp == pytest.approx(ro.log_probs[i].tolist(), abs=1e-4)
            assert rec["info"]["reward"] == pytest.approx(float(ro.rewards[i]))


def test_marks_are_the_steps_over_both_ranks(run):
    folder, _, _ = run
    for entry in read_manifest(folder / "trajectories" / "manifest.jsonl"):
        records = load_trajectories(folder / "trajectories" / entry["file"])
        scores = sorted((t["entropy_score"] for r in records for t in r["pure_generated_tokens"]), reverse=True)
        tau = scores[top_count(0.2, len(scores)) - 1]
        assert entry["high_entropy_threshold"] == pytest.approx(tau)
        for r in records:
            assert [t["high_entropy"] for t in r["pure_generated_tokens"]] == [
                t["entropy_score"] >= entry["high_entropy_threshold"] for t in r["pure_generated_tokens"]]


def test_the_ray_class_puts_the_mixin_first_and_refuses_typos():
    import ray

    base = ray.remote(num_gpus=1)(CPUPolicyActor)  # as upstream decorates PolicyModelActor
    cls = trajectory_policy_actor(base, **FLAGS)
    assert isinstance(cls, ray.actor.ActorClass)
    plain = ray_actor_class(cls)
    assert plain.__mro__[1:3] == (TrajectoryActorMixin, CPUPolicyActor) and plain.trajectory_flags == FLAGS
    with pytest.raises(ValueError, match="unknown key 'num_trajectory_to_save'"):
        trajectory_policy_actor(base, num_trajectory_to_save=3)


def test_a_resumed_run_continues_the_step_numbers_and_redoes_the_later_steps(tmp_path):
    """Resuming from the checkpoint of step 1 (upstream's ``checkpoint_states``): the files of steps
    2 and 3 left by the crashed run are dropped, and the next step is saved as step 2."""
    from openrlhf_ext.models.embedded import embedded_model_path
    from openrlhf_ext.trajectory import TrajectorySaver

    model, tok = rollouts.load_embedded()
    ro = rollouts.sample(model, tok, n_prompts=2, n_samples=2, temperature=TEMPERATURE, seed=9)
    earlier = TrajectorySaver(tmp_path / "trajectories", tok)
    for step in (1, 2, 3):
        earlier.save_step(step, rollouts.upstream_experiences(ro, micro=4, Experience=Experience))
    earlier.close()  # the crashed run's process is gone, and its hold on the folder with it

    class ResumedActor(CPUPolicyActor):
        def init_model_from_pretrained(self, *args, **kwargs):
            super().init_model_from_pretrained(*args, **kwargs)
            self.checkpoint_states = {"global_step": 1}

    actor = type("Actor", (TrajectoryActorMixin, ResumedActor), {"trajectory_flags": FLAGS})()
    actor.init_model_from_pretrained(types.SimpleNamespace(args=upstream_args(tmp_path)), embedded_model_path())
    assert [m["global_step"] for m in read_manifest(tmp_path / "trajectories" / "manifest.jsonl")] == [1]
    (exp,) = rollouts.upstream_experiences(ro, micro=4, Experience=Experience)
    del exp.action_entropy
    exp.action_log_probs = actor.forward(exp.sequences, exp.action_mask, exp.attention_mask)
    actor.append(exp)
    actor.fit()
    assert [m["global_step"] for m in read_manifest(tmp_path / "trajectories" / "manifest.jsonl")] == [1, 2]
    assert not (tmp_path / "trajectories" / "trajectories_step_3.json").exists()
    (rec, *_) = load_trajectories(tmp_path / "trajectories" / "trajectories_step_2.json")
    assert all(t["entropy_score"] is not None for t in rec["pure_generated_tokens"])


@pytest.mark.parametrize("packed", [False, True])
def test_entropies_of_one_model_call_land_on_their_rows(packed):
    """A padded call gives (B, S) entropies, a packed one (--packing_samples) (1, T) with the rows'
    real tokens one after the other; either way token j + 1 gets the entropy at position j."""
    actor = object.__new__(type("Actor", (TrajectoryActorMixin, CPUPolicyActor), {}))
    actor._trajectory_entropies, actor._trajectory_entropy_ok = {}, True
    seqs = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])  # right-padded, as upstream's
    attn = (seqs > 0).long()
    if packed:
        entropy = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5]])  # row 0 at 0-2, row 1 at 3-4
    else:
        entropy = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.4, 0.5, 9.0, 9.0]])
    actor._keep_entropies(_real_rows(seqs, attn), tuple(seqs.shape), entropy)
    exp = types.SimpleNamespace(sequences=seqs, attention_mask=attn, action_mask=torch.ones(2, 3, dtype=torch.bool))
    got = actor._entropy_of(exp)  # (B, S - 1)
    assert torch.equal(got.isnan(), torch.tensor([[False, False, True], [False, True, True]]))
    assert got[~got.isnan()].tolist() == pytest.approx([0.1, 0.2, 0.4])


def test_steps_that_are_not_saved_do_no_entropy_work(tmp_path, monkeypatch):
    """trajectory_save_steps=2 over four steps: files for steps 2 and 4 only, and on steps 1 and 3
    neither the controller's forward nor append computes an entropy. On a saved step the entropy is
    taken once in the controller's forward (before the step opens) and once in the extra pass for
    the rows whose forward ran elsewhere (inside the open step)."""
    import openrlhf_ext.integrations.openrlhf as integration
    from openrlhf_ext.models.embedded import embedded_model_path

    model, tok = rollouts.load_embedded()
    flags = dict(FLAGS, trajectory_save_steps=2)
    actor = type("Actor", (TrajectoryActorMixin, CPUPolicyActor), {"trajectory_flags": flags})()
    actor.init_model_from_pretrained(types.SimpleNamespace(args=upstream_args(tmp_path)), embedded_model_path())
    calls = []  # (step being made, whether it was open) per entropy computed

    def counted(logits, temperature):
        calls.append((actor._trajectory_step + (0 if actor._trajectory_open else 1), actor._trajectory_open))
        return token_entropy(logits, temperature)

    token_entropy = integration.token_entropy
    monkeypatch.setattr(integration, "token_entropy", counted)
    for step in (1, 2, 3, 4):
        ro = rollouts.sample(model, tok, n_prompts=2, n_samples=2, temperature=TEMPERATURE, seed=20 + step)
        here, elsewhere = rollouts.upstream_experiences(ro, micro=2, Experience=Experience)
        for e in (here, elsewhere):
            del e.action_entropy  # the controller never has it
            e.action_log_probs = CPUPolicyActor.forward(actor, e.sequences, e.action_mask, e.attention_mask)
        actor.forward(here.sequences, here.action_mask, here.attention_mask)  # this rank's old-log-prob pass
        actor.append(here)
        actor.append(elsewhere)  # its forward ran on another rank: the extra pass, when saved
        actor.fit()
    assert calls == [(2, False), (2, True), (4, False), (4, True)]
    assert actor.fits == 4
    out = tmp_path / "trajectories"
    assert sorted(p.name for p in out.glob("trajectories_step_*.json")) == ["trajectories_step_2.json",
                                                                             "trajectories_step_4.json"]
    assert [m["global_step"] for m in read_manifest(out / "manifest.jsonl")] == [2, 4]
    for step in (2, 4):
        records = load_trajectories(out / f"trajectories_step_{step}.json")
        assert len(records) == 4
        assert all(t["entropy_score"] is not None for r in records for t in r["pure_generated_tokens"])


def test_the_rollout_engines_log_probs_reach_the_files(tmp_path):
    """Upstream keeps vLLM's log-probs in ``Experience.rollout_log_probs`` ((B, S - 1), like
    action_mask) when it is asked to (``--enable_vllm_is_correction`` and the like): each token gets
    its ``rollout_logprob`` and the manifest the step's ``logprob_mismatch``. Without them (None,
    upstream's default) neither is written."""
    from openrlhf_ext.models.embedded import embedded_model_path

    model, tok = rollouts.load_embedded()
    actor = type("Actor", (TrajectoryActorMixin, CPUPolicyActor), {"trajectory_flags": FLAGS})()
    actor.init_model_from_pretrained(types.SimpleNamespace(args=upstream_args(tmp_path)), embedded_model_path())
    ro = rollouts.sample(model, tok, n_prompts=2, n_samples=2, temperature=TEMPERATURE, seed=31)
    for step in (1, 2):
        (exp,) = rollouts.upstream_experiences(ro, micro=4, Experience=Experience)
        del exp.action_entropy
        # the engine's log-probs: the sampler's, 0.25 off on every action token (0 elsewhere, as upstream pads)
        exp.rollout_log_probs = (exp.action_log_probs - 0.25) * exp.action_mask if step == 1 else None
        exp.action_log_probs = actor.forward(exp.sequences, exp.action_mask, exp.attention_mask)
        actor.append(exp)
        actor.fit()
    out = tmp_path / "trajectories"
    with_rollout, without = read_manifest(out / "manifest.jsonl")
    assert with_rollout["logprob_mismatch"]["max_abs"] == pytest.approx(0.25, abs=1e-3)
    assert with_rollout["logprob_mismatch"]["mean_abs"] == pytest.approx(0.25, abs=1e-3)
    assert "logprob_mismatch" not in without
    expected = {tuple(p + r): lp for p, r, lp in zip(ro.prompt_ids, ro.response_ids, ro.log_probs)}
    records = load_trajectories(out / "trajectories_step_1.json")
    assert len(records) == 4
    for rec in records:
        toks = rec["pure_generated_tokens"]
        want = [x - 0.25 for x in expected[tuple(t["id"] for t in rec["generated_tokens"])].tolist()]
        assert [t["rollout_logprob"] for t in toks] == pytest.approx(want, abs=1e-5)
    assert not any("rollout_logprob" in t for r in load_trajectories(out / "trajectories_step_2.json")
                   for t in r["pure_generated_tokens"])
