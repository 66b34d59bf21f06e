"""Fixtures for the integration tests: a real control plane (tests/cluster), an API client, and one fresh
namespace per test.

By default the session starts its own control plane on free ports under .state/cluster/pytest-<pid>/ and
stops it at the end (the state directory is kept when a test failed). Set SLM_TEST_KUBECONFIG to the
kubeconfig of a running one (for instance `make cluster-up`'s .state/cluster/dev/kubeconfig) to reuse it;
a reused control plane is left running.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the `cluster` package

from cluster import Cluster, ControlPlane, ControlPlaneError, WaitTimeoutError, binaries, kube, wait_until
from cluster.controlplane import reap_stale
from cluster.metrics import MetricsPipeline, MetricsPipelineError
from cluster.paths import BUILD_SCRIPT, REPO_ROOT
from cluster.processes import tail
from cluster.realnode import RealNode, RealNodeError

REUSE_ENV = "SLM_TEST_KUBECONFIG"
NAMESPACE_LABEL = "slm-operator.io/test"

_PLANE = pytest.StashKey[ControlPlane | None]()


def _progress_for(config: pytest.Config) -> Callable[[str], None]:
    """Progress lines on the terminal even while pytest captures output (cluster start takes a while)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def progress(message: str) -> None:
        if reporter is None or capture is None:
            print(f"[cluster] {message}", file=sys.stderr, flush=True)
            return
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.write_line(f"[cluster] {message}")

    return progress


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build missing control-plane binaries before any test runs (outside every test's timeout), so a
    clean checkout needs nothing but `pytest`; warm, this finds them all present and does nothing."""
    if os.environ.get(REUSE_ENV) or not binaries().missing():
        return
    if not any(item.get_closest_marker("cluster") for item in session.items):
        return
    progress = _progress_for(session.config)
    progress(f"building the control-plane binaries ({BUILD_SCRIPT.relative_to(REPO_ROOT)}; 10-30 min cold)")
    with subprocess.Popen([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as build:
        assert build.stdout is not None
        for line in build.stdout:
            if not line.startswith("go: downloading"):
                progress(line.rstrip())
    if build.returncode != 0:
        progress(f"{BUILD_SCRIPT.name} failed with exit code {build.returncode}; cluster tests will error")


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The session's control plane: reused from SLM_TEST_KUBECONFIG, or started (and stopped) here."""
    reuse = os.environ.get(REUSE_ENV)
    if reuse:
        kubeconfig = Path(reuse)
        if not kubeconfig.is_file():
            pytest.fail(f"{REUSE_ENV}={reuse} is not a file", pytrace=False)
        plane = ControlPlane.from_kubeconfig(kubeconfig)
        if plane is not None and not plane.running():
            pytest.fail(f"{REUSE_ENV}: the control plane in {plane.state_dir} is not running", pytrace=False)
        request.config.stash[_PLANE] = plane
        yield Cluster(kubeconfig, plane, owned=False)
        return

    progress = _progress_for(request.config)
    parent = REPO_ROOT / ".state" / "cluster"
    for stale in reap_stale(parent):
        progress(f"stopped a control plane left running by a dead session: {stale}")
    plane = ControlPlane(parent / f"pytest-{os.getpid()}", progress=progress, attached=True)
    request.config.stash[_PLANE] = plane
    failure = None
    try:
        plane.start()
    except ControlPlaneError as error:
        failure = str(error)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    try:
        yield Cluster(plane.kubeconfig, plane, owned=True)
    finally:
        if request.session.testsfailed:
            plane.stop()
            progress(f"tests failed; state and logs kept in {plane.state_dir}")
        else:
            plane.destroy()


@pytest.fixture(scope="session")
def api(control_plane: Cluster) -> Iterator[client.ApiClient]:
    """An admin API client for the session's control plane."""
    with kube.api_client(control_plane.kubeconfig) as api_client:
        yield api_client


@pytest.fixture(scope="session")
def real_node(control_plane: Cluster, request: pytest.FixtureRequest) -> Iterator[RealNode]:
    """The real kubelet node beside the kwok nodes (tests/cluster/realnode.py; tests carry the `realnode`
    marker). Place pods there with `NODE_SELECTOR` and `TOLERATION`; `import_image()` loads OCI archives.
    One runs per machine: another session's node is waited for. A node started by `make cluster-up
    REAL_NODE=1` (with SLM_TEST_KUBECONFIG) is used and left running."""
    if control_plane.plane is None:
        pytest.fail(f"{REUSE_ENV}: the real node needs a control plane started by tests/cluster", pytrace=False)
    node = control_plane.plane.real_node(progress=_progress_for(request.config))
    if node.running():
        yield node
        return
    failure = None
    try:
        node.start(claim_timeout=240)
    except RealNodeError as error:
        failure = str(error)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def metrics_pipeline(
    real_node: RealNode, control_plane: Cluster, request: pytest.FixtureRequest
) -> Iterator[MetricsPipeline]:
    """The autoscaling metrics pipeline beside the real node (tests/cluster/metrics.py): metrics-server
    (metrics.k8s.io for the real node's pods), KEDA's operator and adapter (ScaledObjects, external.metrics.k8s.io)
    and Prometheus (`prometheus_url`; scrapes Services labelled app.kubernetes.io/part-of=slm-operator on port
    `http` every second, with ServiceMonitor labels). `query()`, `targets()`, `logs()` help tests. A pipeline
    started by `make cluster-up REAL_NODE=1` (with SLM_TEST_KUBECONFIG) is used and left running."""
    assert control_plane.plane is not None  # the real_node fixture fails first otherwise
    pipeline = control_plane.plane.metrics_pipeline(progress=_progress_for(request.config))
    if pipeline.running():
        yield pipeline
        return
    failure = None
    try:
        pipeline.start()
    except MetricsPipelineError as error:
        failure = str(error)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    try:
        yield pipeline
    finally:
        pipeline.stop()


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40].rstrip("-")
    return f"t-{slug}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(api: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace with its default service account. Afterwards it is deleted and the test waits
    until it is gone (the namespace controller waits 5 s first), so the next test starts on a quiet
    cluster; a namespace that cannot be deleted fails the teardown with the controller's reason."""
    core = client.CoreV1Api(api)
    name = _namespace_name(request.node.name)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={NAMESPACE_LABEL: "integration"}))
    )
    wait_until(f"service account {name}/default", lambda: not kube.missing_service_account(api, name), 60)
    yield name
    core.delete_namespace(name)
    # Simulated pods need no graceful shutdown; removing them now lets the namespace controller finish in
    # one pass after its fixed 5 s delay instead of requeueing for the pods' grace period.
    core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    try:
        wait_until(f"namespace {name} deleted", lambda: kube.namespace_gone(api, name), 120)
    except WaitTimeoutError as error:
        raise WaitTimeoutError(f"{error}; {kube.namespace_conditions(api, name)}") from None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tail of every component's log to the report of a failed cluster test."""
    report = yield
    plane = item.config.stash.get(_PLANE, None)
    if report.failed and plane is not None and "control_plane" in getattr(item, "fixturenames", ()):
        for name, path in plane.log_files().items():
            if text := tail(path, 30):
                report.sections.append((f"{name} log (last 30 lines of {path})", text))
    return report
