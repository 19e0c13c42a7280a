"""Reward functions as the trainer calls them: reward_fn(queries, prompts, labels) -> list[float].

queries are prompt + response, decoded with special tokens (OpenRLHF's convention).
"""
import json
import pickle
import random
import threading
from argparse import Namespace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openrlhf_ext.rewards import FileReward, HttpReward, MathVerifyReward, RewardError, build_reward_fn
from openrlhf_ext.rewards.math_verify_reward import math_verify_score, plain_number_verdict


# --- default: math-verify on the final answer --------------------------------------------------

def test_default_reward_is_exact_answer_for_the_addition_task():
    reward = build_reward_fn(Namespace(remote_rm_url=None))
    solution = "7+5=12\n4+8+1=13\n3+2+1=6\n"
    queries = ["347+285=" + solution + "\\boxed{632}", "347+285=" + solution + "\\boxed{632}</s>",
               "347+285=" + solution + "\\boxed{633}", "347+285=" + solution + "\\boxed{6320}",
               "347+285=" + solution, "347+285=7+5=12\n\\boxed{63"]
    assert reward(queries, ["347+285="] * 6, ["632"] * 6) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert reward(["12+7=19", "99+99=198"], ["12+7=", "99+99="], ["19", "198"]) == [1.0, 1.0]


def test_the_prompt_numbers_are_not_taken_for_the_answer():
    # "12+7=" contains 12 and 7; a response with no answer must not score by quoting the prompt
    assert MathVerifyReward()(["12+7=7"], ["12+7="], ["7"]) == [1.0]
    assert MathVerifyReward()(["12+7=12"], ["12+7="], ["19"]) == [0.0]


def test_math_answers_are_compared_symbolically():
    reward = MathVerifyReward()
    queries = ["Q: half? A: \\boxed{\\frac{1}{2}}", "Q: half? A: the answer is 0.5", "Q: half? A: \\boxed{2}"]
    assert reward(queries, ["Q: half? A:"] * 3, ["\\frac{1}{2}"] * 3) == [1.0, 1.0, 0.0]


def test_tokenizer_special_tokens_are_stripped():
    class Tok:  # any object with all_special_tokens, as a HF tokenizer has
        all_special_tokens = ["<|im_end|>", "<|endoftext|>"]

    reward = build_reward_fn(Namespace(remote_rm_url=None), tokenizer=Tok())
    assert reward(["2+2=<|im_end|>4<|im_end|><|endoftext|>"], ["2+2="], ["4"]) == [1.0]


def test_math_verify_reward_works_outside_the_main_thread():
    # math-verify's default timeout uses signal.alarm, which raises in threads (Ray actors, servers)
    out = []
    t = threading.Thread(target=lambda: out.append(MathVerifyReward()(["1+1=2"], ["1+1="], ["2"])))
    t.start()
    t.join()
    assert out == [[1.0]]


def test_no_label_scores_zero_even_for_an_empty_response():
    # without --label_key every label is "": an empty response must not "equal" it
    assert MathVerifyReward()(["1+1=", "1+1=2"], ["1+1=", "1+1="], ["", ""]) == [0.0, 0.0]
    # a label math-verify cannot parse falls back to exact text
    assert MathVerifyReward()(["Q:yes", "Q:no"], ["Q:", "Q:"], ["yes", "yes"]) == [1.0, 0.0]


def test_lengths_must_agree():
    with pytest.raises(ValueError, match="differ in length"):
        MathVerifyReward()(["a", "b"], ["a"], ["1", "2"])


# --- the plain-number shortcut and the batch call: math-verify's verdicts, computed faster ------

def math_verify_itself(response: str, label: str) -> float:
    """The reward as it was before any shortcut: math-verify parses both sides and compares."""
    from math_verify import parse, verify

    if not label.strip():
        return 0.0
    gold = parse(label)
    if not gold:
        return float(response.strip() == label.strip())
    answer = parse(response)
    return float(verify(gold, answer)) if answer else 0.0


_digits = st.text("0123456789", min_size=1, max_size=24)
_pad = st.text(" \n", max_size=3)
_labels = st.one_of(st.builds(lambda a, d, b: a + d + b, _pad, _digits, _pad), st.integers(0, 10**6).map(str),
                    st.sampled_from(["-3", "1/2", "\\frac{1}{2}", "0.5", "1,000", "x", " ", "12 3"]))
_solutions = st.builds(lambda text, d, end: text + "\\boxed{" + d + "}" + end,
                       st.text("0123456789+= \n", max_size=40), _digits, _pad)
# pieces that steer math-verify elsewhere: LaTeX environments, "final answer", braces, signs, decimals
_near = st.lists(st.sampled_from(["\\boxed{", "}", "{", "$", "\\(", "\\)", "\\[", "answer", "final answer is ",
                                  "so ", "-", ".", ",", "%", "x", "1", "12", "0", "+", "=", " ", "\n", "\t",
                                  "\\frac{1}{2}", "٣"]), max_size=12).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(response=st.one_of(_solutions, _near, st.builds(str.__add__, _solutions, _near)), label=_labels)
def test_plain_number_shortcut_returns_what_math_verify_returns(response, label):
    fast = plain_number_verdict(response, label)
    if fast is not None:
        assert fast == math_verify_itself(response, label), (response, label)
    assert math_verify_score(response, label) == math_verify_itself(response, label), (response, label)


def test_the_shortcut_covers_the_worked_solutions():
    # every well-formed solution of the built-in task, right or wrong, is judged without a parse
    assert plain_number_verdict("7+5=12\n4+8+1=13\n3+2+1=6\n\\boxed{632}", "632") == 1.0
    assert plain_number_verdict("7+5=12\n4+8=12\n3+2+1=6\n\\boxed{622}", "632") == 0.0
    assert plain_number_verdict("\\boxed{0632}", "632") == 1.0  # math-verify reads the number
    for text in ("so \\boxed{632}", "\\boxed{632} or \\boxed{1}", "$\\boxed{632}$", "\\boxed{-632}"):
        assert plain_number_verdict(text, "632") is None  # left to math-verify


def test_batch_call_equals_math_verify_per_response_with_and_without_the_pool():
    rng = random.Random(0)
    pieces = ["7+5=12\n", "4+8+1=13\n", "\\boxed{632}", "\\boxed{633}", "answer: 632", "$632$", "6 3 2", "}"]
    responses = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) for _ in range(120)]
    labels = [rng.choice(["632", "633", "\\frac{1}{2}", ""]) for _ in responses]
    queries = ["347+285=" + r for r in responses]
    expected = [math_verify_itself(r, lab) for r, lab in zip(responses, labels)]
    assert MathVerifyReward(num_workers=0)(queries, ["347+285="] * len(queries), labels) == expected
    pooled = MathVerifyReward(num_workers=2)  # > POOL_MIN_ITEMS responses the shortcut leaves: the pool judges them
    try:
        assert pooled(queries, ["347+285="] * len(queries), labels) == expected
        assert pooled._pool is not None
        assert pickle.loads(pickle.dumps(pooled))._pool is None  # a copy for a Ray worker starts its own
    finally:
        pooled.close()


# --- a .py file defining reward_func -----------------------------------------------------------

def test_file_reward(tmp_path):
    path = tmp_path / "my_reward.py"
    path.write_text(
        "import torch\n"
        "def reward_func(queries, prompts, labels):\n"
        "    return torch.tensor([float(len(q) - len(p)) for q, p in zip(queries, prompts)])\n"
    )
    reward = build_reward_fn(Namespace(remote_rm_url=str(path)))
    assert isinstance(reward, FileReward)
    assert reward(["ab+cdef", "x"], ["ab+", "x"], ["", ""]) == [4.0, 0.0]
    # it travels to Ray workers by pickle, and loads the file again there
    assert pickle.loads(pickle.dumps(reward))(["hello"], ["he"], [""]) == [3.0]


def test_file_reward_dict_form_and_errors(tmp_path):
    good = tmp_path / "dict_reward.py"
    good.write_text("def reward_func(q, p, l):\n    return {'rewards': [1] * len(q), 'scores': [0] * len(q)}\n")
    assert FileReward(str(good))(["a", "b"], ["", ""], ["", ""]) == [1.0, 1.0]

    missing_func = tmp_path / "nofunc.py"
    missing_func.write_text("x = 1\n")
    with pytest.raises(RewardError, match="reward_func"):
        FileReward(str(missing_func))(["a"], [""], [""])

    wrong_count = tmp_path / "short.py"
    wrong_count.write_text("def reward_func(q, p, l):\n    return [1.0]\n")
    with pytest.raises(RewardError, match="1 rewards for 2 queries"):
        FileReward(str(wrong_count))(["a", "b"], ["", ""], ["", ""])

    nan = tmp_path / "nan.py"
    nan.write_text("def reward_func(q, p, l):\n    return [float('nan')]\n")
    with pytest.raises(RewardError, match="finite"):
        FileReward(str(nan))(["a"], [""], [""])

    with pytest.raises(FileNotFoundError):
        build_reward_fn(Namespace(remote_rm_url=str(tmp_path / "absent.py")))
    with pytest.raises(ValueError, match="neither an http"):
        build_reward_fn(Namespace(remote_rm_url="reward_server:5000"))


# --- an HTTP reward server on 127.0.0.1 --------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    """Scores 1.0 when the query ends with its label; /short answers too few rewards; /broken 500s."""

    seen = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append(body)
        if self.path == "/broken":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"boom")
            return
        rewards = [float(q.endswith(lab)) for q, lab in zip(body["query"], body["labels"])]
        if self.path == "/short":
            rewards = rewards[:-1]
        data = json.dumps({"rewards": rewards, "scores": rewards}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_http_reward_round_trip(server):
    reward = build_reward_fn(Namespace(remote_rm_url=server + "/get_reward"))
    assert isinstance(reward, HttpReward)
    out = reward(["1+1=2", "1+1=3"], ["1+1=", "1+1="], ["2", "2"])
    assert out == [1.0, 0.0]
    # the request body follows OpenRLHF's field names
    assert _Handler.seen[-1] == {"query": ["1+1=2", "1+1=3"], "prompts": ["1+1=", "1+1="], "labels": ["2", "2"]}


def test_http_reward_errors_name_the_server(server):
    with pytest.raises(RewardError, match="1 rewards for 2 queries"):
        HttpReward(server + "/short")(["a", "b"], ["", ""], ["", ""])
    with pytest.raises(RewardError, match="HTTP 500"):
        HttpReward(server + "/broken")(["a"], [""], [""])
    # nothing listens on port 9 (discard): unreachable after the retries
    with pytest.raises(RewardError, match="unreachable"):
        HttpReward("http://127.0.0.1:9/x", timeout=2, retries=0)(["a"], [""], [""])
