"""The control loop: backend events -> store -> snapshot -> decide -> apply; failover and recovery.

Entry points (import them from their modules; this package stays light so the CLI starts fast):
``loop.ControlLoop``, ``controller.LoopController`` (the API's Controller), ``setup.backends_from_fleet``,
``reconcile.reconcile``, ``env.job_env``, ``demo.run_demo``, ``client.ApiClient`` (used by the CLI).
"""
