"""Batch placement: many gangs compete for limited pool capacity; place them at minimum cost + penalty.

    from overcast.placement.batch import BatchProblem, solve
    solution = solve(problem, time_budget_s=1.5)
    solution.assignment  # pool index per job, -1 = left out

See docs/batch-placement.md for the model, the pipeline and measured figures.
"""

from overcast.placement.batch.check import InvalidSolution, assert_valid, check_solution
from overcast.placement.batch.problem import UNLIMITED, BatchProblem, BatchProblemError, BatchSolution
from overcast.placement.batch.solver import METHODS, greedy, solve

__all__ = [
    "METHODS",
    "UNLIMITED",
    "BatchProblem",
    "BatchProblemError",
    "BatchSolution",
    "InvalidSolution",
    "assert_valid",
    "check_solution",
    "greedy",
    "solve",
]
