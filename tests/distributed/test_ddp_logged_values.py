"""Distributed values a Lightning user reads, on a real 2-process ``gloo`` run (``ddp_values_job.py``):
``self.log(..., on_step=True, sync_dist=True)`` puts the reduced value in ``trainer.callback_metrics``
on every rank at every step, and ``ModelCheckpoint``'s ``best_model_path``/``best_model_score`` are
the same on every rank (rank zero's, as Lightning). The expected values are computed by hand from
what each rank logs; a differential run of Lightning's ddp_spawn would cost far more for the same check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_distributed_processes import assert_ok, run

JOB = str(Path(__file__).resolve().parent / "ddp_values_job.py")
STEPS_PER_EPOCH, EPOCHS = 4, 2


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp_values")
    proc = run([sys.executable, JOB, str(out)], timeout=240)
    assert_ok(proc)
    return [json.loads((out / f"values_rank{r}.json").read_text()) for r in (0, 1)]


def test_sync_dist_step_values_are_reduced_in_callback_metrics_on_every_rank(ranks):
    for info in ranks:
        steps = info["steps"]
        assert [s["global_step"] for s in steps] == list(range(1, STEPS_PER_EPOCH * EPOCHS + 1))
        for s in steps:
            logged_at = s["global_step"] - 1  # training_step logged before its optimizer step
            assert s["step_mean"] == pytest.approx((1 * (logged_at + 1) + 2 * (logged_at + 1)) / 2)  # ranks 0, 1
            assert s["step_max"] == 10.0 - logged_at  # max(0 - step, 10 - step)
            assert s["step_sum_step"] == 3.0  # 1 + 2
            assert s["local"] == float(info["rank"])  # without sync_dist each rank keeps its own
        # the epoch sum over both ranks and the epoch's steps, reduced once at epoch end
        assert info["step_sum_epoch"] == 3.0 * STEPS_PER_EPOCH


def test_checkpoint_bookkeeping_is_rank_zeros_on_every_rank(ranks):
    first, second = ranks
    for key in ("best_model_path", "best_model_score", "kth_best_model_path", "last_model_path", "best_k_models"):
        assert second[key] == first[key], key
    # rank zero logged val_score 10, 9 (rank one 20, 19): its best is epoch 1
    assert Path(first["best_model_path"]).name == "epoch=1-step=8.ckpt" and first["best_model_score"] == 9.0
    assert Path(first["last_model_path"]).name == "last.ckpt"
    assert first["files"] == ["epoch=1-step=8.ckpt", "last.ckpt"]
