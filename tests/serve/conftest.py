"""One local Ray cluster and one Serve instance for the whole test session; each
graph module deploys its own app on it and deletes it after.

A fixture that fails while setting up shuts Ray down again, so one slow start
does not leave a cluster that every later module's ``ray.init`` trips over; and
a proxy that is slow to start (Serve allows it 60 s) is waited for, not failed.
"""

from __future__ import annotations

import contextlib
import time

import httpx
import pytest
from net import free_port

APP = "poly-ray"
PROXY_WAIT_S = 300  # a loaded 2-core machine has taken more than Serve's own 60 s


class ServeCluster:
    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import ray
        from ray import serve

        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            deadline = time.monotonic() + PROXY_WAIT_S
            while True:
                try:
                    serve.start(http_options={"host": "127.0.0.1", "port": self.port})
                    break
                except TimeoutError:  # the proxy is slow; the controller is up, so ask again
                    if time.monotonic() > deadline:
                        raise
            self._wait_for_proxy(deadline)
        except BaseException:
            self.stop()
            raise

    def _wait_for_proxy(self, deadline: float) -> None:
        while True:
            # Any answer will do: before an app is deployed the proxy answers 503.
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{self.url}/-/healthz", timeout=5)
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Serve's proxy did not answer on {self.url} within {PROXY_WAIT_S} s")
            time.sleep(0.5)

    def deploy(self, app) -> str:
        """The app deployed at ``/``; its base URL. A failed deploy leaves no app behind.
        Ray is started again first if a module stopped it (test_cluster.py runs its own)."""
        import ray
        from ray import serve

        if not ray.is_initialized():
            self.start()
        try:
            serve.run(app, name=APP, route_prefix="/")
        except BaseException:
            self.remove()
            raise
        return self.url

    def remove(self) -> None:
        import ray
        from ray import serve

        if not ray.is_initialized():  # nothing deployed; and never let Serve find another cluster
            return
        with contextlib.suppress(Exception):  # nothing deployed, or Serve already gone
            serve.delete(APP)

    def restart(self) -> None:
        """Serve and Ray stopped and started again (what a restarted machine sees)."""
        self.stop()
        self.start()

    @staticmethod
    def stop() -> None:
        import ray
        from ray import serve

        if not ray.is_initialized():
            return
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


@pytest.fixture(scope="session")
def ray_serve():
    cluster = ServeCluster()
    cluster.start()
    yield cluster
    cluster.stop()
