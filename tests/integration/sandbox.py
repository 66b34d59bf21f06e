"""A container's filesystem contract without a container engine, for the tests that run what the images run.

``sandboxed`` wraps commands so that they run in a private mount namespace (unshare) where / is read-only,
/tmp is an empty tmpfs holding only the given files, each volume path is an empty tmpfs owned by the user, and
the commands run as uid/gid 65532 (setpriv), as the chart's and the operator's pod security contexts say. The
host's mounts are untouched. Needs root; the project's machines and CI run as root.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import sys
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["UID", "image_env", "sandboxed"]

UID = 65532
_CHECKOUT = Path(__file__).resolve().parents[2]
_HOLD = "/mnt"  # an existing directory, covered by a private tmpfs while the exposed paths are held there

_SCRIPT = r"""
set -eu
exec 3<"$SANDBOX_FILES"
# Paths the commands need that the sandbox would hide (a checkout cloned under /tmp, an interpreter under a
# home directory others cannot enter): held aside now, put back read-only at the same paths below.
mount -t tmpfs -o mode=0700 tmpfs "$SANDBOX_HOLD"
n=0
for path in $SANDBOX_EXPOSE; do
    n=$((n + 1))
    mkdir "$SANDBOX_HOLD/$n"
    mount --rbind "$path" "$SANDBOX_HOLD/$n"
done
mount -o remount,bind,ro /
mount -t tmpfs -o mode=1777 tmpfs /tmp
tar -xf - -C /tmp <&3
exec 3<&-
for volume in $SANDBOX_VOLUMES; do
    mount -t tmpfs -o "uid=$SANDBOX_UID,gid=$SANDBOX_UID,mode=0755" tmpfs "$volume"
done
for hidden in $SANDBOX_HIDDEN; do
    mount -t tmpfs -o mode=0755 tmpfs "$hidden"
done
n=0
for path in $SANDBOX_EXPOSE; do
    n=$((n + 1))
    mkdir -p "$path"
    mount --bind "$SANDBOX_HOLD/$n" "$path"
    mount -n -o remount,bind,ro "$path"  # -n: no userspace mount table to update on a read-only root
done
umount -l "$SANDBOX_HOLD"
drop="setpriv --reuid=$SANDBOX_UID --regid=$SANDBOX_UID --clear-groups env -i"
eval "$SANDBOX_RUN"
"""


def image_env(dockerfile: Path) -> dict[str, str]:
    """The ENV of a Dockerfile's final stage (what the container starts with), $PATH expanded to a plain one."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages = re.split(r"(?m)^FROM ", text)
    env: dict[str, str] = {}
    for line in stages[-1].splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                env[key] = value.replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


def _hidden_ancestor(path: Path) -> Path | None:
    """The top-most ancestor of ``path`` that others cannot traverse, if any."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
            return parent
    return None


def _archive(files: Mapping[str, str], path: Path) -> None:
    """A tar of /tmp's initial files, owned by the sandbox user."""
    with tarfile.open(path, "w") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), 0o600, UID, UID
            archive.addfile(info, io.BytesIO(data))


def sandboxed(
    commands: Sequence[Sequence[str]],
    env: Mapping[str, str],
    workdir: Path,
    *,
    files: Mapping[str, str] | None = None,
    volumes: Sequence[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) for Popen: ``commands`` run one after another (the last one replaces the shell, so
    the Popen pid is its pid), each with exactly ``env``; ``files`` are written to /tmp/<name> (0600, the
    user's); ``volumes`` are absolute paths of existing, empty directories to mount writable tmpfs on."""
    archive = workdir / "sandbox-files.tar"
    _archive(files or {}, archive)
    environment = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    steps = [f"$drop {environment} {shlex.join(command)}" for command in commands]
    steps[-1] = f"exec {steps[-1]}"
    # The interpreter (its base prefix, and the virtual environment with the checkout it was installed from).
    needed = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), _CHECKOUT}
    tmp = Path("/tmp")
    hidden = {a for path in needed if (a := _hidden_ancestor(path)) and tmp not in a.parents}
    covered = [tmp, *hidden]
    expose = sorted(p for p in needed if any(c in p.parents for c in covered))
    expose = [p for p in expose if not any(other in p.parents for other in expose)]  # a checkout holds its .venv
    sandbox_env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "SANDBOX_FILES": str(archive),
        "SANDBOX_VOLUMES": " ".join(volumes),
        "SANDBOX_UID": str(UID),
        "SANDBOX_HOLD": _HOLD,
        "SANDBOX_HIDDEN": " ".join(str(h) for h in sorted(hidden)),
        "SANDBOX_EXPOSE": " ".join(str(p) for p in expose),
        "SANDBOX_RUN": " && ".join(steps),
    }
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SCRIPT], sandbox_env
