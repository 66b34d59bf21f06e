"""Leader election on a coordination.k8s.io/v1 Lease: only one operator replica reconciles.

The replica that holds the Lease renews it every ``renew_seconds``; the others wait in
``acquire_blocking`` and take over once it has not been renewed for ``lease_seconds``. A leader that cannot
renew in time exits the process, so two replicas never act at once; Kubernetes restarts it as a follower.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from kubernetes import client
from kubernetes.client.exceptions import ApiException

__all__ = ["LeaseElector"]

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class LeaseElector:
    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        namespace: str,
        name: str,
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
        identity: str | None = None,
    ) -> None:
        self._api = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.identity = identity or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self._leader = threading.Event()
        self._stop = threading.Event()

    def is_leader(self) -> bool:
        return self._leader.is_set()

    def _spec(self, acquire_time: datetime | None) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self.lease_seconds,
            acquire_time=acquire_time,
            renew_time=_now(),
        )

    def _try_acquire(self) -> bool:
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name), spec=self._spec(_now()))
            try:
                self._api.create_namespaced_lease(self.namespace, body)
            except ApiException as create_exc:
                if create_exc.status == 409:
                    return False
                raise
            return True
        spec = lease.spec
        holder = spec.holder_identity if spec else None
        renewed = spec.renew_time if spec else None
        duration = (spec.lease_duration_seconds if spec else None) or self.lease_seconds
        expired = renewed is None or renewed + timedelta(seconds=duration) < _now()
        if holder not in (None, "", self.identity) and not expired:
            return False
        acquire_time = spec.acquire_time if holder == self.identity and spec else _now()
        lease.spec = self._spec(acquire_time)
        try:  # resourceVersion in the body makes this a compare-and-swap
            self._api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def acquire_blocking(self) -> None:
        """Wait until this replica holds the Lease, then keep renewing it on a daemon thread."""
        while not self._try_acquire():
            log.info("waiting for the leader lease %s/%s", self.namespace, self.name)
            time.sleep(self.renew_seconds)
        self._leader.set()
        log.info("acquired the leader lease %s/%s as %s", self.namespace, self.name, self.identity)
        threading.Thread(target=self._renew_forever, name="lease-renewal", daemon=True).start()

    def _renew_forever(self) -> None:
        last_renewal = time.monotonic()
        while not self._stop.wait(self.renew_seconds):
            try:
                if self._try_acquire():
                    last_renewal = time.monotonic()
                    continue
                log.error("lost the leader lease to another replica; exiting")
            except Exception as exc:  # a transient API error: keep trying until the lease would expire
                log.warning("renewing the leader lease failed: %s", exc)
                if time.monotonic() - last_renewal < self.lease_seconds - self.renew_seconds:
                    continue
                log.error("could not renew the leader lease in time; exiting")
            self._leader.clear()
            os._exit(1)

    def release(self) -> None:
        """Stop renewing and give the Lease up so a follower takes over at once."""
        self._stop.set()
        if not self._leader.is_set():
            return
        self._leader.clear()
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self._api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            log.warning("releasing the leader lease failed: %s", exc)
