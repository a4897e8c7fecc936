"""The reads ``kubectl oomsight`` makes, as plain JSON dicts, with every failure as one line.

Reads go through the official client's ``ApiClient`` (so exec plugins, OIDC refresh and client
certificates work as ``oomsight.kube.clientconfig`` set them up) but skip its generated models: the
core functions take the API's own JSON. Each call names its verb and resource, so an RBAC denial says
exactly what to grant (``ClusterRead.denied``); 404 on a whole resource type means its CRD (and so
the component that owns it) is not installed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import urllib3

from oomsight.core.errors import OomsightError
from oomsight.kube import crd
from oomsight.kube.clientconfig import REQUEST_TIMEOUT, ClusterTarget


class ApiReadError(OomsightError):
    """A read the user can do something about (unreachable, unauthorized, forbidden, not found)."""

    def __init__(self, message: str, hint: str, status: int) -> None:
        super().__init__(message, hint)
        self.status = status


@dataclass(frozen=True, slots=True)
class Resource:
    """What a path reads, for the one line an RBAC denial gets: ``list events.events.k8s.io``."""

    verb: str
    resource: str
    group: str = ""
    namespace: str | None = None

    def __str__(self) -> str:
        name = f"{self.resource}.{self.group}" if self.group else self.resource
        where = f" in namespace {self.namespace}" if self.namespace else " (cluster-wide)"
        return f"{self.verb} {name}{where}"


class ClusterRead:
    def __init__(self, target: ClusterTarget) -> None:
        self.target = target

    # --- one request --------------------------------------------------------------------------

    def _get(self, path: str, what: Resource, query: dict[str, str] | None = None) -> dict[str, Any]:
        api: Any = self.target.api
        request = api.param_serialize(
            method="GET",
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            resp = api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
            resp.read()
        except urllib3.exceptions.HTTPError as err:
            raise self._unreachable(str(getattr(err, "reason", None) or err)) from err
        except OSError as err:
            raise self._unreachable(str(err)) from err
        except Exception as err:  # the client's ApiException (status 0: a TLS failure)
            if getattr(err, "status", None) == 0:
                raise self._unreachable(str(getattr(err, "reason", "") or err).splitlines()[-1]) from err
            raise
        body = self._json(resp.data)
        status = int(resp.status)
        if 200 <= status < 300:
            return body
        message = str(body.get("message") or resp.data[:200].decode(errors="replace"))
        if status == 401:
            raise ApiReadError(
                f"the API server at {self.target.server} refused the credentials of "
                f"{self._who()} (401 Unauthorized)",
                "log in again or renew the token/certificate (kubectl auth whoami shows who you are)",
                status,
            )
        if status == 403:
            raise ApiReadError(
                f"RBAC denies {what} to {self._who()}",
                f"ask for a Role/ClusterRole granting '{what.verb}' on "
                f"{what.resource}{'.' + what.group if what.group else ''} ({message[:160]})",
                status,
            )
        raise ApiReadError(f"{what}: HTTP {status}: {message[:200]}", "", status)

    @staticmethod
    def _json(raw: bytes | None) -> dict[str, Any]:
        try:
            parsed = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}

    def _who(self) -> str:
        t = self.target
        return f"user {t.user!r} of context {t.context!r}" if t.context else "this ServiceAccount"

    def _unreachable(self, why: str) -> ApiReadError:
        return ApiReadError(
            f"cannot reach the API server at {self.target.server}: {why.strip()[:200]}",
            f"check the cluster is up and the context is right (kubectl --context {self.target.context} "
            "cluster-info)"
            if self.target.context
            else "check the cluster is up",
            0,
        )

    def _maybe(self, path: str, what: Resource, query: dict[str, str] | None = None) -> dict[str, Any] | None:
        """A GET where 404 is an answer (None), not a failure."""
        try:
            return self._get(path, what, query)
        except ApiReadError as err:
            if err.status == 404:
                return None
            raise

    def _list(self, path: str, what: Resource, query: dict[str, str] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cont = ""
        while True:
            page = {**(query or {}), "limit": "500", **({"continue": cont} if cont else {})}
            body = self._get(path, what, page)
            items.extend(body.get("items") or [])
            cont = str((body.get("metadata") or {}).get("continue") or "")
            if not cont:
                return items

    # --- what the commands read ---------------------------------------------------------------

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._maybe(
            f"/api/v1/namespaces/{namespace}/pods/{name}", Resource("get", "pods", namespace=namespace)
        )

    def pods(self, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        return self._list(
            f"/api/v1/namespaces/{namespace}/pods",
            Resource("list", "pods", namespace=namespace),
            {"labelSelector": selector} if selector else None,
        )

    def workload(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        """A Deployment, StatefulSet, DaemonSet, ReplicaSet (apps/v1) or Job (batch/v1); None: not found."""
        group, plural = WORKLOAD_PATHS[kind]
        return self._maybe(
            f"/apis/{group}/v1/namespaces/{namespace}/{plural}/{name}",
            Resource("get", plural, group, namespace),
        )

    def replicasets(self, namespace: str, selector: str | None) -> list[dict[str, Any]]:
        return self._list(
            f"/apis/apps/v1/namespaces/{namespace}/replicasets",
            Resource("list", "replicasets", "apps", namespace),
            {"labelSelector": selector} if selector else None,
        )

    def pod_events(self, namespace: str, pod_name: str) -> list[dict[str, Any]]:
        """``events.k8s.io/v1`` Events regarding the Pod (any reporter; the core picks the agent's)."""
        return self._list(
            f"/apis/events.k8s.io/v1/namespaces/{namespace}/events",
            Resource("list", "events", "events.k8s.io", namespace),
            {"fieldSelector": f"regarding.kind=Pod,regarding.name={pod_name}"},
        )

    def node_names(self) -> list[str]:
        items = self._list("/api/v1/nodes", Resource("list", "nodes"))
        return [str((n.get("metadata") or {}).get("name")) for n in items]

    def node_report(self, node: str) -> dict[str, Any] | None:
        """The node's NodeMemoryReport; None when the agent wrote none. ``CrdMissing`` when the CRD is
        not installed (oomsight is not installed on the cluster)."""
        path = f"/apis/{crd.GROUP}/{crd.VERSION}/{crd.NODE_REPORT_PLURAL}"
        what = Resource("get", crd.NODE_REPORT_PLURAL, crd.GROUP)
        found = self._maybe(f"{path}/{node}", what)
        if found is None and not self._served(crd.NODE_REPORT_PLURAL):
            raise CrdMissing(crd.NODE_REPORT_KIND)
        return found

    def node_reports(self) -> list[dict[str, Any]]:
        path = f"/apis/{crd.GROUP}/{crd.VERSION}/{crd.NODE_REPORT_PLURAL}"
        try:
            return self._list(path, Resource("list", crd.NODE_REPORT_PLURAL, crd.GROUP))
        except ApiReadError as err:
            if err.status == 404:
                raise CrdMissing(crd.NODE_REPORT_KIND) from err
            raise

    def memory_policies(self, namespace: str) -> list[dict[str, Any]]:
        path = f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{namespace}/{crd.MEMORY_POLICY_PLURAL}"
        try:
            return self._list(path, Resource("list", crd.MEMORY_POLICY_PLURAL, crd.GROUP, namespace))
        except ApiReadError as err:
            if err.status == 404:
                raise CrdMissing(crd.MEMORY_POLICY_KIND) from err
            raise

    def _served(self, plural: str) -> bool:
        body = self._maybe(f"/apis/{crd.GROUP}/{crd.VERSION}", Resource("get", "apis", crd.GROUP))
        return any(r.get("name") == plural for r in (body or {}).get("resources") or [])


class CrdMissing(OomsightError):
    """The cluster does not serve this oomsight kind: the chart (CRDs) is not installed."""

    def __init__(self, kind: str) -> None:
        super().__init__(
            f"the cluster has no {kind} resource (oomsight's CRDs are not installed)",
            "install the chart (helm install oomsight charts/oomsight -n oomsight --create-namespace)",
        )
        self.kind = kind


WORKLOAD_PATHS = {
    "Deployment": ("apps", "deployments"),
    "StatefulSet": ("apps", "statefulsets"),
    "DaemonSet": ("apps", "daemonsets"),
    "ReplicaSet": ("apps", "replicasets"),
    "Job": ("batch", "jobs"),
}
