"""The model-server pod's contract without a container engine: the operator's rendered init and main containers
(`slm-runtime pull`, `slm-runtime serve`, their exact arguments and environment) run as uid 65532 on a read-only
root filesystem, writing only to /tmp and the model-cache volume, and serve the real Gemma 3 270M model.

tests/integration/sandbox.py stands in for the container (read-only root, tmpfs /tmp and cache volume, uid/gid
65532); the environment adds what runtime/Dockerfile sets (HOME=/tmp ...). Needs root (CI is root).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from harness import ROOT, free_port
from sandbox import UID, image_env, sandboxed

from slm_operator.api.enums import Accelerator
from slm_operator.api.errors import validate_manifest
from slm_operator.render import RenderOptions, render_all
from slm_operator.settings import OperatorSettings

pytestmark = pytest.mark.model

CACHE = "/srv"  # stands in for the cache volume's mount path (an existing, empty directory to mount over)
TERMINATION_LOG = "/tmp/termination-log"  # the kubelet mounts /dev/termination-log; here it lives in /tmp


def pod_spec() -> dict[str, Any]:
    manifest = yaml.safe_load((ROOT / "examples" / "gemma3-270m.yaml").read_text())
    manifest["metadata"]["namespace"] = "team-a"
    settings = OperatorSettings(cache_mount_path=CACHE)
    rendered = render_all(validate_manifest(manifest), settings, RenderOptions(Accelerator.CPU))
    (deployment,) = [m for m in rendered if m["kind"] == "Deployment"]
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def sandboxed_pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    if os.geteuid() != 0:
        pytest.fail("this test needs root for unshare/mount/setpriv (CI runs as root)", pytrace=False)
    spec = pod_spec()
    (pull,) = spec["initContainers"]
    (serve,) = spec["containers"]
    assert serve["args"] == ["serve"] and pull["securityContext"]["readOnlyRootFilesystem"]
    assert serve["securityContext"]["runAsUser"] == UID == spec["securityContext"]["runAsUser"]
    assert {m["mountPath"] for m in serve["volumeMounts"]} == {CACHE, "/tmp"}  # the only writable paths
    pull_args = [TERMINATION_LOG if a == "/dev/termination-log" else a for a in pull["args"]]
    port = free_port()
    env = {e["name"]: e["value"] for e in serve["env"]}
    env.update({"SLM_HOST": "127.0.0.1", "SLM_PORT": str(port)})
    image = image_env(ROOT / "runtime" / "Dockerfile")
    assert image["HOME"] == "/tmp" and image["USER"]
    entrypoint = str(Path(sys.executable).parent / "slm-runtime")  # the image's ENTRYPOINT
    workdir = tmp_path_factory.mktemp("pod")
    log_path = workdir / "pod.log"
    command, sandbox_env = sandboxed(
        [[entrypoint, *pull_args], [entrypoint, *serve["args"]]],
        {**image, **env},
        workdir,
        volumes=[CACHE],
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=sandbox_env, stdout=log, stderr=subprocess.STDOUT, cwd="/")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"the sandboxed pod exited:\n{log_path.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"not ready in 180s:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url, process, log_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def test_pull_and_serve_run_as_65532_on_a_read_only_root(
    sandboxed_pod: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    url, process, log_path = sandboxed_pod
    status = Path(f"/proc/{process.pid}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {str(UID)}  # real, effective, saved, filesystem
    response = httpx.post(
        f"{url}/api/generate",
        json={"model": "gemma3:270m", "prompt": "Hello", "stream": False, "options": {"num_predict": 4}},
        timeout=120,
    )
    assert response.status_code == 200 and response.json()["eval_count"] == 4
    log = log_path.read_text()
    assert "Read-only file system" not in log and "Permission denied" not in log, log[-3000:]
    assert "model gemma3:270m ready" in log


def test_the_pull_result_reaches_the_termination_log(sandboxed_pod: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    """The operator reads the init container's termination message into status.model: it must be written even
    with a read-only root. The file is inside the sandbox's /tmp, so read it through the process's root."""
    _, process, _ = sandboxed_pod
    message = Path(f"/proc/{process.pid}/root{TERMINATION_LOG}").read_text()
    result = json.loads(message)
    assert "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818" in json.dumps(result)
