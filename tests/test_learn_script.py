"""benchmarks/learn.py's bookkeeping without a model: pairing with the base evaluation, the table, --resume."""

from __future__ import annotations

import dataclasses
import json

from test_ablation import learn, score


def test_pairing_with_the_cached_base_counts_discordant_problems():
    base, after = score(4, "t"), score(10, "t")  # after gets q0..q9 right, base q0..q3
    paired = learn.Paired.of(base, after)
    assert (paired.only_after, paired.only_before) == (6, 0)
    assert abs(paired.diff - 0.3) < 1e-12 and abs(paired.p_value - 2 * 0.5**6) < 1e-12


def test_table_reports_each_seed_and_the_mean(tmp_path):
    base = {split: score(4, data) for split, data in learn.SPLITS.items()}
    training = learn.Training(steps=21, updated_steps=20, checkpoint="c", entropy_end=0.2, step_minutes=10.0,
                              wall_minutes=10.3)
    results = [learn.SeedResult(seed, training, {s: learn.Paired.of(base[s], score(right, d)) for s, d in learn.SPLITS.items()})
               for seed, right in ((0, 8), (1, 10))]
    text = learn.table(results, base, target=25)
    assert "| 0 | 21 (20) | 20.0% -> 40.0%" in text and "| 1 | 21 (20) | 20.0% -> 50.0%" in text
    assert "+25.0 +- 7.1 points" in text  # mean and sample sd of +20 and +30
    assert "rose by >= 25 points: 1/2" in text


def test_resume_keeps_a_finished_seed_only_for_the_same_command(tmp_path):
    out = tmp_path / "out"
    checkpoint = tmp_path / "ckpt" / "step-3"
    checkpoint.mkdir(parents=True)
    training = learn.Training(steps=3, updated_steps=3, checkpoint=str(checkpoint), entropy_end=None, step_minutes=1.0,
                              wall_minutes=1.2)
    (out / "s0").mkdir(parents=True)
    saved = {"command": learn.train_args(0, 10.0, out, []), "training": dataclasses.asdict(training)}
    (out / "s0" / "training.json").write_text(json.dumps(saved))
    assert learn.finished_training(0, out, [], 10.0) == training
    assert learn.finished_training(0, out, ["ppo.learning_rate=3e-5"], 10.0) is None  # another command
    assert learn.finished_training(0, out, [], 5.0) is None
    assert learn.finished_training(1, out, [], 10.0) is None  # never trained
    checkpoint.rmdir()
    assert learn.finished_training(0, out, [], 10.0) is None  # its checkpoint is gone
