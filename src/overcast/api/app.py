"""The REST API: ``create_app(store, controller)`` -> a FastAPI app (OpenAPI at /openapi.json).

Run it with ``uvicorn --factory overcast.api.app:app_from_env`` or from ``overcast up``.
"""

from __future__ import annotations

from fastapi import FastAPI

from overcast import __version__
from overcast.api import errors, routes_budget, routes_jobs, routes_services, routes_system, routes_usage
from overcast.api.auth import TokenCache
from overcast.api.controller import Controller
from overcast.api.limits import BodyLimit
from overcast.store import Store


def create_app(store: Store, controller: Controller | None = None) -> FastAPI:
    app = FastAPI(
        title="overcast",
        version=__version__,
        description="Many GPU providers as one pool of AI compute. Send `Authorization: Bearer <token>`.",
    )
    app.state.store = store
    app.state.controller = controller
    app.state.tokens = TokenCache(store)
    app.include_router(routes_jobs.router)
    app.include_router(routes_services.router)
    app.include_router(routes_system.router)
    app.include_router(routes_usage.router)
    app.include_router(routes_budget.router)

    app.add_middleware(BodyLimit)
    errors.install(app)
    return app


def app_from_env() -> FastAPI:
    """App over the default store (OVERCAST_DATABASE_URL or $OVERCAST_HOME/overcast.db), no controller."""
    return create_app(Store())
