"""Waking models at zero replicas.

The dispatcher tells the activator which models it wants awake (:meth:`Activator.want`, when it holds a request
for a model that scales to zero) and when it no longer needs them (:meth:`Activator.release`, when it has no
request for the model in flight or held). What the activator does with that depends on the wake mode:

- ``metric`` (:class:`MetricActivator`): nothing; the held request shows in the gateway's in-flight gauge, and
  KEDA's activation trigger on it scales the model from zero at its next poll.
- ``direct`` (:class:`DirectActivator`): the gateway sets the KEDA force-activation annotation on the model's
  ScaledObject (so KEDA keeps it above zero while the gateway has requests for it) and scales the Deployment from
  0 to 1 itself, for the fastest wake; on release it removes the annotation, and KEDA's idle period takes over.
  The Kubernetes calls (:class:`WakeActions`) are blocking; one background task makes them in a thread, in order,
  converging on the latest wish per model and retrying failures, so requests never wait for the apiserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from slm_gateway.catalog import Model

__all__ = ["Activator", "DirectActivator", "MetricActivator", "WakeActions"]

log = logging.getLogger(__name__)


class Activator(Protocol):
    def want(self, model: Model) -> None:
        """The gateway holds a request for ``model``, which has no ready pod and may be at zero."""

    def release(self, model_id: str) -> None:
        """The gateway has no request for the model in flight or held any more."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class MetricActivator:
    """Wake mode ``metric``: KEDA wakes the model from the gateway's in-flight gauge; nothing to do here."""

    def want(self, model: Model) -> None:
        pass

    def release(self, model_id: str) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class WakeActions(Protocol):
    """The Kubernetes writes of the direct wake mode (blocking; run in a thread)."""

    def activate(self, namespace: str, name: str) -> None:
        """Force-activate the model's ScaledObject and scale its Deployment from 0 to 1."""

    def deactivate(self, namespace: str, name: str) -> None:
        """Remove the force-activation annotation."""


class DirectActivator:
    """Wake mode ``direct``; see the module docstring."""

    def __init__(self, actions: WakeActions, *, retry_seconds: float = 2.0) -> None:
        self._actions = actions
        self._retry_seconds = retry_seconds
        self._wanted: dict[str, Model] = {}
        self._active: dict[str, Model] = {}
        """Models whose ScaledObject carries the annotation (as far as this gateway set it)."""
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def active(self) -> set[str]:
        return set(self._active)

    def want(self, model: Model) -> None:
        if model.id not in self._wanted:
            self._wanted[model.id] = model
            self._kick.set()

    def release(self, model_id: str) -> None:
        if self._wanted.pop(model_id, None) is not None or model_id in self._active:
            self._kick.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="slm-gateway-activator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def settled(self) -> None:
        """Return once every wish has been carried out (tests)."""
        while set(self._wanted) != set(self._active) or self._kick.is_set():
            await asyncio.sleep(0.005)

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            failed = False
            for id_, model in list(self._wanted.items()):
                if id_ not in self._active:
                    ok = await self._call(self._actions.activate, model, "activate")
                    failed |= not ok
                    if ok:
                        self._active[id_] = model
            for id_, model in list(self._active.items()):
                if id_ not in self._wanted:
                    ok = await self._call(self._actions.deactivate, model, "deactivate")
                    failed |= not ok
                    if ok:
                        del self._active[id_]
            if failed:
                await asyncio.sleep(self._retry_seconds)
                self._kick.set()

    @staticmethod
    async def _call(action: Callable[[str, str], None], model: Model, what: str) -> bool:
        try:
            await asyncio.to_thread(action, model.namespace, model.name)
        except Exception:
            log.warning("could not %s %s (retrying)", what, model.id, exc_info=True)
            return False
        log.info("%sd %s", what, model.id)
        return True
