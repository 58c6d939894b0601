"""From the fractional LP to integer class counts: LP-guided greedy.

Measured (docs/batch-placement.md): floor(y) + greedy repair loses most where the LP splits big, valuable
gangs across pools, because floor drops them and the small jobs committed meanwhile leave no room to
put them back; re-solving the residual LP repeats the same loss. What works is to keep the greedy visit
order (priority, then value) and let the LP choose the pool: each class tries its columns by decreasing
LP value, then by cost. Two visit orders are tried, by density (penalty per node) and by penalty (big
valuable gangs first), and the better result is kept.
"""

from __future__ import annotations

import numpy as np

from overcast.placement.batch.classes import ClassModel
from overcast.placement.batch.fill import fill
from overcast.placement.batch.relax import Relaxation

ORDERS = ("density", "value")


def round_relaxation(cm: ClassModel, rel: Relaxation) -> tuple[np.ndarray, str]:
    """Best LP-guided fill over the visit orders; returns (y, order used)."""
    best, best_obj, best_order = None, np.inf, ORDERS[0]
    cap = np.ceil(rel.y - 1e-6).astype(np.int64)
    for order in ORDERS:
        # First every class takes what the LP gave it (rounded up while room lasts), then the rest.
        y = fill(cm, fill(cm, prefer=rel.y, order=order, col_cap=cap))
        obj = cm.objective(y)
        if obj < best_obj:
            best, best_obj, best_order = y, obj, order
    assert best is not None
    return best, best_order
