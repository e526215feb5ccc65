"""Output-aware activation range search: for each shared-scale group in graph order, try a few scalings
of its clipping range and keep the one that gives the lowest worst-output noise ratio of the whole QDQ
model on the fit samples (coordinate descent, one sweep). Observers pick ranges tensor by tensor; this
picks them for what they do to the model's outputs."""
from __future__ import annotations

from typing import Dict, Tuple

import onnx

from ..calibration.ranges import QParams, qparams
from ..plan.planner import QuantPlan
from .samples import Samples, Scorer

FACTORS = (0.8, 0.9, 1.12, 1.25)


def search_ranges(fp32: onnx.ModelProto, model: onnx.ModelProto, plan: QuantPlan, params: Dict[str, QParams],
                  samples: Samples, device: str) -> Tuple[Dict[str, QParams], str]:
    scorer = Scorer(fp32, samples.fit, plan, samples.fixed_batch, device)
    best, current = scorer.score(model, params), dict(params)
    groups = [(root, members) for root, members in plan.groups().items() if root in params]
    changed = 0
    for root, members in groups:
        base = current[root]
        winner = None
        for factor in FACTORS:
            trial = qparams(base.lo * factor, base.hi * factor)
            candidate = {**current, **{m: trial for m in members if m in current}}
            score = scorer.score(model, candidate)
            if score < best:
                best, winner = score, candidate
        if winner is not None:
            current, changed = winner, changed + 1
    return current, f"{changed} of {len(groups)} ranges changed"
