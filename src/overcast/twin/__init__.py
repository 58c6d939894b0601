"""The digital twin: the production scheduler (``overcast.scheduler.decide``) on a virtual clock.

Simulated providers replay real spot-availability traces, workloads come from real cluster traces, and
prices come from the bundled catalog. ``runner.run_scenario`` is the entry point.
"""
