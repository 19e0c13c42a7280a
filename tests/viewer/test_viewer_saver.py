"""The saver's own run folder opens in the viewer: what it wrote is what a reader sees."""
import json

from tests.test_saver import make_saver, step_experiences


def test_a_saved_run_folder_opens_with_its_manifest(viewer, tmp_path, tokenizer):
    saver = make_saver(tmp_path, tokenizer, "--num_trajectories_to_save", "8", "--save_entropy_trace")
    saver.save_step(3, step_experiences(tokenizer, seed=0))
    saver.save_step(12, step_experiences(tokenizer, seed=5))
    out = tmp_path / "trajectories"
    viewer.load(out, selector="#dir-input")
    assert viewer.eval_on_selector_all("#steps li", "els => els.map(e => e.textContent)") == ["step 38 traj", "step 128 traj"]
    errors = viewer.eval_on_selector_all("#problems li.error", "els => els.map(e => e.textContent)")
    assert errors == []
    recs = json.loads((out / "trajectories_step_3.json").read_text())
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    # Every response reads back exactly as saved (emoji and CJK included), with the same marks.
    for i, rec in enumerate(recs):
        viewer.click(f"#list .vrow.traj[data-traj='{i}']")
        # The pane of that trajectory (the locator waits for it to be drawn; with "group side by
        # side" on, the first pane on screen may be another response of the group).
        pane = viewer.locator(f".pane[data-traj='{i}']")
        assert pane.locator(".resp-block").text_content() == rec["pure_generated_text"]
        assert pane.locator(".tok.hi").count() == sum(t["high_entropy"] for t in rec["pure_generated_tokens"])
    # The charts and the histogram come from the manifest (the whole step, not just the saved ones).
    assert f"{manifest[0]['entropy']['mean']:.3f}" in viewer.inner_text("#charts")
    assert "manifest (whole step)" in viewer.inner_text("#hist-note")
    viewer.check("[data-toggle=prompt]")
    assert viewer.inner_text(".pane .prompt-block").strip() == recs[-1]["prompt_text"].strip()
