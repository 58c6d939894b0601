"""The few Kubernetes API calls the backend makes, through the official ``kubernetes`` client.

The client is imported here only (so fleets without Kubernetes never import it), and everything it
returns is turned into plain JSON-shaped dicts (camelCase, as ``kubectl get -o json`` shows them): the
rest of the backend is pure functions over those. Errors become two kinds: :class:`KubeUnreachable`
(no answer, timeouts, 5xx: try again later) and :class:`KubeRefused` (the API said no: 4xx).

List/poll only, no watch: one labelled list per poll is cheap at overcast's scale, and a watch needs
resourceVersion bookkeeping for little gain here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from overcast.backends.base import CapacityError, ProviderDown
from overcast.backends.kubernetes_config import KubeCluster

log = logging.getLogger(__name__)


class KubeUnreachable(Exception):
    """The API server did not answer (or answered 5xx): the cluster is down for us, for now."""


class KubeRefused(Exception):
    """The API server refused the request (4xx): ``status`` and its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def refusal(backend: str, e: KubeRefused) -> Exception:
    """What a 4xx on a launch means: only 422 (an object the API cannot accept) is the job's own fault;
    the rest is the pool's: credentials (401), a missing namespace (404) -> down; forbidden or quota
    exceeded (403), a name taken (409), throttled (429) and the like -> out of capacity, try elsewhere."""
    if e.status == 422:
        return ValueError(f"{backend} refused the Job: {e}")
    if e.status in (401, 404):
        return ProviderDown(f"{backend}: {e}")
    return CapacityError(f"{backend}: {e}")


def _api_client(cluster: KubeCluster) -> Any:
    from kubernetes import client, config

    if not cluster.is_url:  # a kubeconfig context: its server, user and CA come from the file
        return config.new_client_from_config(config_file=cluster.kubeconfig, context=cluster.api)
    conf = client.Configuration(host=cluster.api.rstrip("/"))
    conf.retries = 0  # a dead API must fail fast; the backend's own down/retry bookkeeping takes over
    if cluster.token_file:
        token_file = Path(cluster.token_file)

        def read_token(c: Any) -> None:  # before every request: projected tokens are rotated hourly
            c.api_key = {"BearerToken": token_file.read_text().strip()}

        conf.refresh_api_key_hook = read_token
        conf.api_key = {"BearerToken": ""}  # the client adds the header only if the key exists
        conf.api_key_prefix = {"BearerToken": "Bearer"}
    if cluster.ca_file:
        conf.ssl_ca_cert = cluster.ca_file
    return client.ApiClient(conf)


def _message(exc: Any) -> str:
    """The Status message of an ApiException, without headers (which may carry tokens)."""
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(getattr(exc, "reason", "") or type(exc).__name__)


class KubeApi:
    """The calls the backend needs, in one namespace."""

    def __init__(self, cluster: KubeCluster) -> None:
        from kubernetes import client

        self.namespace = cluster.namespace
        self.timeout = cluster.request_timeout_s
        self._client = _api_client(cluster)
        self._batch = client.BatchV1Api(self._client)
        self._core = client.CoreV1Api(self._client)
        self._models = client

    def _call(self, fn: Any, *args: Any, timeout: float | None = None, **kw: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, _request_timeout=timeout or self.timeout, **kw)
        except ApiException as e:
            if e.status is None or e.status == 0 or e.status >= 500:
                raise KubeUnreachable(f"{e.status or 'no status'}: {_message(e)}") from None
            raise KubeRefused(e.status, _message(e)) from None
        except Exception as e:  # urllib3's connection errors, timeouts, TLS problems
            if isinstance(e, KubeRefused | KubeUnreachable):
                raise
            raise KubeUnreachable(f"{type(e).__name__}: {e}") from None

    def _dict(self, obj: Any) -> dict[str, Any]:
        return self._client.sanitize_for_serialization(obj)

    # -- jobs and services ----------------------------------------------------------------------------

    def list_jobs(self, selector: str) -> list[dict[str, Any]]:
        found = self._call(self._batch.list_namespaced_job, namespace=self.namespace, label_selector=selector)
        return [self._dict(j) for j in found.items or []]

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        body = self._models.V1Job.from_dict(manifest)
        return self._dict(self._call(self._batch.create_namespaced_job, namespace=self.namespace, body=body))

    def create_service(self, manifest: dict[str, Any]) -> None:
        body = self._models.V1Service.from_dict(manifest)
        self._call(self._core.create_namespaced_service, namespace=self.namespace, body=body)

    def delete_job(self, name: str, grace_s: int | None = None) -> None:
        """Foreground: the Job object stays (with a deletionTimestamp) until its pods are gone. A missing
        Job is not an error (someone deleted it first)."""
        try:
            self._call(
                self._batch.delete_namespaced_job, name=name, namespace=self.namespace,
                propagation_policy="Foreground", grace_period_seconds=grace_s,
            )  # fmt: skip
        except KubeRefused as e:
            if e.status != 404:
                raise

    # -- pods and nodes -------------------------------------------------------------------------------

    def list_pods(self, selector: str) -> list[dict[str, Any]]:
        found = self._call(self._core.list_namespaced_pod, namespace=self.namespace, label_selector=selector)
        return [self._dict(p) for p in found.items or []]

    def delete_pod(self, name: str, grace_s: int) -> None:
        """SIGTERM now, SIGKILL after ``grace_s`` (0: at once), as the node's kubelet does it."""
        try:
            self._call(
                self._core.delete_namespaced_pod, name=name, namespace=self.namespace,
                grace_period_seconds=grace_s,
            )  # fmt: skip
        except KubeRefused as e:
            if e.status != 404:
                raise

    def pod_log(self, name: str, timeout: float | None = None) -> str:
        read = self._core.read_namespaced_pod_log
        return str(self._call(read, name=name, namespace=self.namespace, timeout=timeout))

    def list_nodes(self, selector: str) -> list[dict[str, Any]] | None:
        """The cluster's nodes; None when overcast may not list them (namespace-scoped RBAC)."""
        try:
            found = self._call(self._core.list_node, label_selector=selector or None)
        except KubeRefused as e:
            if e.status in (401, 403):
                return None
            raise
        return [self._dict(n) for n in found.items or []]
