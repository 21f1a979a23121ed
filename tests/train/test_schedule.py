"""The learning-rate schedule (torch's LinearLR then CosineAnnealingLR) and the ramp of lambda."""

from __future__ import annotations

import math

import pytest
import torch

from relabel.train.schedule import lambda_share, learning_rate_schedule


def _factors(total, warmup):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    schedule = learning_rate_schedule(opt, total, warmup)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return out


@pytest.mark.parametrize("total, warmup", [(40, 10), (12, 1), (30, 3)])
def test_learning_rate_warms_up_linearly_then_decays_as_a_cosine(total, warmup):
    # The hand-written schedule it replaces: (step + 1) / warmup, then 0.5 (1 + cos(pi * progress)).
    expected = [(s + 1) / warmup if s < warmup else
                0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))) for s in range(total)]
    assert _factors(total, warmup) == pytest.approx(expected, abs=1e-9)


def test_lambda_is_off_during_the_warm_up_then_rises_over_one_epoch():
    assert [lambda_share(e, 2) for e in (0, 1.9, 2, 2.25, 3, 10)] == [0, 0, 0, 0.25, 1, 1]
