"""BatchProblem construction and validation, the class reduction, and the independent checker."""

from __future__ import annotations

import numpy as np
import pytest

from overcast.placement.batch import BatchProblem, BatchProblemError, check_solution
from overcast.placement.batch.classes import _sort_within, build_classes


def small() -> BatchProblem:
    # Pools: 0 cheap (4 nodes), 1 dear (unlimited). Jobs 0/1 are identical; job 2 is high priority.
    return BatchProblem.from_lists(
        nodes=[2, 2, 4, 1],
        penalty=[100.0, 100.0, 500.0, 5.0],
        compat=[{0: 10.0, 1: 50.0}, {1: 50.0, 0: 10.0}, {0: 20.0}, {1: 4.0}],
        capacity=[4, None],
        priority=[0, 0, 1, 0],
    )


def test_from_lists_sorts_rows_and_reads_unlimited() -> None:
    p = small()
    assert p.n_jobs == 4 and p.n_pools == 2 and p.n_pairs == 6
    assert list(p.compat_pool[p.compat_indptr[1] : p.compat_indptr[2]]) == [0, 1]
    assert np.isinf(p.pool_capacity[1])
    assert p.pair_index(np.array([2, 2]), np.array([0, 1])).tolist() == [4, -1]


def test_objective_counts_cost_of_placed_and_penalty_of_left_out() -> None:
    p = small()
    assert p.objective(np.array([1, 1, 0, -1])) == pytest.approx(50 + 50 + 20 + 5)
    with pytest.raises(BatchProblemError, match="incompatible"):
        p.objective(np.array([-1, -1, 1, -1]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nodes": [0, 2, 4, 1]}, r"job_nodes\[0\] = 0 must be >= 1"),
        ({"penalty": [1.0, float("nan"), 1.0, 1.0]}, r"job_penalty\[1\]"),
        ({"compat": [{0: 1.0}, {7: 1.0}, {0: 1.0}, {1: 1.0}]}, r"compat_pool\[1\] = 7 is not a pool index"),
        ({"compat": [{0: -1.0}, {0: 1.0}, {0: 1.0}, {1: 1.0}]}, r"compat_cost\[0\]"),
        ({"capacity": [2.5, None]}, r"pool_capacity\[0\] = 2.5 must be a whole number"),
        ({"nodes": [1, 2]}, "compat has 4 rows, expected one per job"),
        ({"priority": [0, 1]}, "job_priority has 2 entries, expected 4"),
    ],
)
def test_bad_input_names_the_field(change: dict, message: str) -> None:
    args = {
        "nodes": [2, 2, 4, 1],
        "penalty": [100.0, 100.0, 500.0, 5.0],
        "compat": [{0: 10.0}, {0: 10.0}, {0: 20.0}, {1: 6.0}],
        "capacity": [4, None],
        "priority": [0, 0, 1, 0],
    } | change
    with pytest.raises(BatchProblemError, match=message):
        BatchProblem.from_lists(**args)


def test_duplicate_pair_is_rejected() -> None:
    with pytest.raises(BatchProblemError, match="lists pool 0 twice"):
        BatchProblem(
            job_nodes=np.array([1]),
            job_gpus=np.array([8]),
            job_penalty=np.array([1.0]),
            job_priority=np.array([0]),
            compat_indptr=np.array([0, 2]),
            compat_pool=np.array([0, 0]),
            compat_cost=np.array([0.5, 0.6]),
            pool_capacity=np.array([1.0]),
        )


def test_classes_merge_identical_jobs_and_prune_unprofitable_pairs() -> None:
    p = BatchProblem.from_lists(
        nodes=[2, 2, 2, 8],
        penalty=[100.0, 100.0, 100.0, 100.0],
        compat=[{0: 10.0, 1: 150.0}, {0: 10.0}, {0: 11.0}, {0: 10.0}],
        capacity=[4, 4],
    )
    cm = build_classes(p)
    # Jobs 0 and 1 agree once the 150 > 100 pair is pruned; job 2 costs differ; job 3 never fits.
    assert cm.n_classes == 3
    assert sorted(cm.count.tolist()) == [1, 1, 2]
    assert cm.n_cols == 2
    assert cm.col_ub.tolist() == [2, 1]
    y = np.array([2, 0])
    assignment = cm.to_assignment(y, p.n_jobs)
    assert assignment.tolist() == [0, 0, -1, -1]
    assert cm.objective(y) == pytest.approx(p.objective(assignment))


def test_checker_accepts_a_valid_solution() -> None:
    p = small()
    good = np.array([1, 1, 0, 1])  # the priority-1 job takes the whole cheap pool
    assert check_solution(p, good, p.objective(good)) == []


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ([0, 0, 0, 1], "over capacity"),
        ([0, 1, -1, 0], "incompatible"),
        ([0, 0, -1, 1], "job 2 .* left out but pool 0 has 0 free nodes plus 4 used by lower-priority"),
        ([0, -1, -1, 1], "left out"),  # job 2 still blocked by lower-priority job 0
        ([1, 1, 0, -1], "job 3 .* left out but pool 1"),  # unlimited pool pays off for job 3
        ([0, 0], "shape"),
        ([0, 0, 5, 1], "outside"),
    ],
)
def test_checker_rejects_bad_solutions(assignment: list[int], message: str) -> None:
    errors = check_solution(small(), np.array(assignment))
    assert errors, assignment
    assert any(__import__("re").search(message, e) for e in errors), errors


def test_checker_rejects_a_wrong_objective() -> None:
    p = small()
    good = np.array([1, 1, 0, 1])
    assert "differs" in check_solution(p, good, p.objective(good) - 1.0)[0]


def test_checker_rejects_a_pair_that_never_pays_off() -> None:
    # Parking the high-priority job at a loss in the unlimited pool would free the cheap pool for job 0;
    # such pairs count as incompatible, so the only valid optimum runs job 1 in pool 0.
    p = BatchProblem.from_lists(
        nodes=[1, 1],
        penalty=[2.0, 1.0],
        compat=[{0: 0.0}, {0: 0.0, 1: 1.0}],
        capacity=[1, None],
        priority=[0, 1],
    )
    assert "never pays off" in check_solution(p, np.array([0, 1]))[0]
    assert check_solution(p, np.array([-1, 0])) == []


@pytest.mark.parametrize("mean_len", [3, 200])
def test_sort_within_matches_a_lexsort_by_segment_then_value(mean_len: int) -> None:
    rng = np.random.default_rng(mean_len)
    lengths = rng.integers(0, 2 * mean_len, 300)
    indptr = np.concatenate(([0], np.cumsum(lengths)))
    values = rng.integers(0, 20, int(indptr[-1])).astype(np.float64)  # many ties: stability matters
    want = np.lexsort((values, np.repeat(np.arange(lengths.size), lengths)))
    assert np.array_equal(_sort_within(values, indptr), want)
