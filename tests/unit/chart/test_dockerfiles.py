"""The Dockerfiles without a container engine: entrypoints are the project's console scripts, the arguments the
chart and the operator pass parse with the real CLIs, bases are pinned, the user is 65532, and hadolint is clean."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from slm_operator.api.enums import Accelerator
from slm_operator.api.errors import validate_manifest
from slm_operator.cli import build_parser as slm_parser
from slm_operator.hardware import DEFAULT_PROFILES
from slm_operator.render import RenderOptions, render_all
from slm_operator.settings import OperatorSettings
from slm_runtime.cli import build_parser as runtime_parser

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILES = {"operator": ROOT / "operator" / "Dockerfile", "runtime": ROOT / "runtime" / "Dockerfile"}
SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    )
    pairs = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def exec_form(path: Path, word: str) -> list[str]:
    (value,) = [rest for w, rest in final_stage(path) if w == word]
    parsed: list[str] = json.loads(value)  # exec form: no shell between the kubelet and the program
    return parsed


@pytest.mark.parametrize(("image", "script"), [("operator", "slm"), ("runtime", "slm-runtime")])
def test_entrypoint_is_a_console_script_of_the_project(image: str, script: str) -> None:
    assert exec_form(DOCKERFILES[image], "ENTRYPOINT") == [script]
    assert script in SCRIPTS
    module, _, function = SCRIPTS[script].partition(":")
    assert callable(getattr(__import__(module, fromlist=[function]), function))


def test_operator_image_runs_the_charts_arguments() -> None:
    cmd = exec_form(DOCKERFILES["operator"], "CMD")
    assert slm_parser().parse_args(cmd).operator_command == "run"
    chart_args = ["--log-level", "INFO", "operator", "run", "--namespace", "team-a", "--verbose"]
    parsed = slm_parser().parse_args(chart_args)
    assert parsed.namespace == ["team-a"] and parsed.verbose


def test_runtime_image_runs_the_operators_pod_arguments() -> None:
    """The operator passes only args (no command): each must parse after the image's ENTRYPOINT."""
    manifest = {
        "apiVersion": "slm-operator.io/v1alpha1",
        "kind": "SLMDeployment",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {"model": {"source": "hf://org/repo/model.gguf", "sha256": "a" * 64}},
    }
    rendered = render_all(validate_manifest(manifest), OperatorSettings(), RenderOptions(Accelerator.CPU))
    (deployment,) = [m for m in rendered if m["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    containers = [*pod["initContainers"], *pod["containers"]]
    assert all("command" not in c for c in containers)
    commands = {runtime_parser().parse_args(c["args"]).command for c in containers}
    assert commands == {"pull", "serve"}
    assert exec_form(DOCKERFILES["runtime"], "CMD") == ["serve"]


@pytest.mark.parametrize("image", DOCKERFILES)
def test_bases_are_pinned_and_the_user_is_65532(image: str) -> None:
    steps = instructions(DOCKERFILES[image])
    args = {}
    for word, rest in steps:
        if word == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
    bases = [rest.split()[0] for word, rest in steps if word == "FROM"]
    external = [args.get(b.strip("${}"), b) for b in bases if b.startswith("${")]
    assert external, "bases come from ARGs so that they can be overridden"
    for base in external:
        tag = base.partition(":")[2]
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{base} is not pinned to a version"
    assert len(bases) >= 2, "multi-stage: build tools stay out of the final image"
    users = [rest for word, rest in final_stage(DOCKERFILES[image]) if word == "USER"]
    assert users == ["65532:65532"]


def stages(path: Path) -> set[str]:
    return {rest.split(" AS ")[1].strip() for word, rest in instructions(path) if word == "FROM" and " AS " in rest}


def make_variable(name: str) -> list[str]:
    """A variable as make itself expands it from the Makefile (which includes hack/images.mk)."""
    make = shutil.which("make")
    assert make, "make is needed to build the images"
    result = subprocess.run(
        [make, "-s", "--no-print-directory", "-C", str(ROOT), "--eval", "print-%: ; @echo $($*)", f"print-{name}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.split()


def make_dry_run(target: str, *variables: str) -> str:
    make = shutil.which("make")
    assert make, "make is needed to build the images"
    result = subprocess.run(
        [make, "-n", "--no-print-directory", "-C", str(ROOT), target, *variables],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, f"make -n {target}: {result.stderr}"
    return result.stdout


@pytest.mark.parametrize("accelerator", list(DEFAULT_PROFILES))
def test_every_profiles_image_variant_has_a_stage_and_a_make_target(accelerator: Accelerator) -> None:
    """A profile never names an image that no target builds: VARIANT=<v> selects build-<v>/final-<v> in
    runtime/Dockerfile, `make image-runtime-<v>` (docker, or buildah through hack/images/build.sh) builds it, and
    its tag is the one the operator runs for that profile ("<tag>-<v>", the plain tag for cpu)."""
    profile = DEFAULT_PROFILES[accelerator]
    variant = profile.image_variant
    assert {f"build-{variant}", f"final-{variant}"} <= stages(DOCKERFILES["runtime"])
    assert variant in make_variable("RUNTIME_VARIANTS")
    assert f"image-runtime-{variant}" in make_variable("RUNTIME_TARGETS")

    image = "registry.example.com/slm-runtime:1.0"
    expected = OperatorSettings(runtime_image=image).image_for(profile)
    docker = make_dry_run(f"image-runtime-{variant}", "CONTAINER_TOOL=docker", f"RUNTIME_IMAGE={image}")
    assert f"--build-arg VARIANT={variant} " in docker and f"-t {expected} " in docker + " "
    buildah = make_dry_run(f"image-runtime-{variant}", "CONTAINER_TOOL=buildah", f"RUNTIME_IMAGE={image}")
    assert f"RUNTIME_IMAGE={image}" in buildah and f"hack/images/build.sh runtime-{variant}" in buildah
    # hack/images/build.sh names the variant's image the same way: "<RUNTIME_IMAGE>-<variant>" but for cpu.
    script = (ROOT / "hack" / "images" / "build.sh").read_text()
    assert 'build "$runtime_image-$variant" runtime/Dockerfile "$variant"' in script
    assert expected == image + ("" if variant == "cpu" else f"-{variant}")


def test_images_builds_every_variant_asked_for() -> None:
    variants = make_variable("RUNTIME_VARIANTS")
    dry = make_dry_run("images", "CONTAINER_TOOL=docker", f"IMAGE_VARIANTS={' '.join(variants)}")
    assert "-f operator/Dockerfile" in dry
    for variant in variants:
        assert f"--build-arg VARIANT={variant} " in dry


@pytest.mark.parametrize("image", DOCKERFILES)
def test_python_is_called_python3(image: str) -> None:
    """The local Debian base (hack/images/base.sh) has python3 only; the public python image has both."""
    runs = " ".join(rest for word, rest in instructions(DOCKERFILES[image]) if word == "RUN")
    assert not re.search(r"(^|[\s;&|])python\s", runs), "call python3 (the Debian base has no `python`)"


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed: run hack/install-test-tools.sh")
    result = subprocess.run(
        [hadolint, *map(str, DOCKERFILES.values())], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", DOCKERFILES)
def test_the_user_has_a_name_and_a_writable_home(image: str) -> None:
    """kopf (getpass.getuser) and other libraries look the user up: 65532 gets a passwd entry and USER is set;
    HOME is /tmp, the one writable path besides the volumes on a read-only root."""
    final = final_stage(DOCKERFILES[image])
    runs = " ".join(rest for word, rest in final if word == "RUN")
    assert "useradd --uid 65532 --gid 65532" in runs
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "HOME=/tmp" in env and "USER=nonroot" in env
