"""The REST API server (FastAPI): jobs, events, pools, chaos, metrics; bearer tokens per team."""
