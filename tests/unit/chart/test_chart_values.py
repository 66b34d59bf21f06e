"""The chart's values: they validate against values.schema.json, bad ones do not, and the settings block is
exactly what the operator's OperatorSettings reads (so chart and operator cannot drift apart)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from slm_operator.api.enums import Accelerator
from slm_operator.hardware import HardwareProfile
from slm_operator.settings import OperatorSettings

CHART = Path(__file__).resolve().parents[3] / "charts" / "slm-operator"
VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def errors(values: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return ["/".join(str(p) for p in e.absolute_path) + ": " + e.message for e in validator.iter_errors(values)]


def test_schema_is_valid_draft7_and_the_defaults_pass() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert errors(VALUES) == []


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"watchNamespaces": "team-a"}, "watchNamespaces"),
        ({"watchNamespaces": ["Team_A"]}, "watchNamespaces/0"),
        ({"replicaCount": -1}, "replicaCount"),
        ({"unknownKey": 1}, ""),
        ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "image/pullPolicy"),
        (
            {"settings": {"runtimeImage": {"repository": "x"}, "startupTimeoutSeconds": 5}},
            "settings/startupTimeoutSeconds",
        ),
        (
            {"settings": {"runtimeImage": {"repository": "x"}, "hardwareProfiles": {"tpu": {}}}},
            "settings/hardwareProfiles",
        ),
        (
            {"settings": {"runtimeImage": {"repository": "x"}, "hardwareProfiles": {"cpu": {"gpuLayers": 1}}}},
            "settings/hardwareProfiles/cpu",
        ),
        (
            {"settings": {"runtimeImage": {"repository": "x"}, "defaultRequests": {"cpu": "lots"}}},
            "settings/defaultRequests/cpu",
        ),
        ({"monitoring": {"prometheusRule": {"disabled": ["NoSuchAlert"]}}}, "monitoring/prometheusRule/disabled/0"),
        ({"monitoring": {"serviceMonitor": {"interval": "30 seconds"}}}, "monitoring/serviceMonitor/interval"),
    ],
)
def test_schema_rejects_bad_values_at_the_right_path(change: dict[str, Any], where: str) -> None:
    values = {**copy.deepcopy(VALUES), **change}
    found = errors(values)
    assert found, f"{change} was accepted"
    assert any(e.split(": ")[0] == where for e in found), found


def test_settings_keys_are_the_operator_settings_fields() -> None:
    chart_keys = set(VALUES["settings"])
    operator_keys = {camel(name) for name in OperatorSettings.model_fields}
    assert chart_keys == operator_keys
    schema_keys = set(SCHEMA["properties"]["settings"]["properties"])
    assert schema_keys == operator_keys


def test_schema_hardware_profiles_match_the_operator() -> None:
    profiles = SCHEMA["properties"]["settings"]["properties"]["hardwareProfiles"]
    assert set(profiles["propertyNames"]["enum"]) == {a.value for a in Accelerator}
    fields = set(profiles["additionalProperties"]["properties"])
    assert fields == {camel(n) for n in HardwareProfile.model_fields if n != "accelerator"}


def test_chart_defaults_equal_the_operator_defaults() -> None:
    """Where both define a default, they agree, so an install without values behaves like the code."""
    defaults = OperatorSettings()
    settings = VALUES["settings"]
    for name in ("image_pull_policy", "field_manager", "cache_mount_path", "pvc_mount_root", "startup_timeout_seconds"):
        assert settings[camel(name)] == getattr(defaults, name), name
    assert settings["defaultRequests"] == defaults.default_requests
    assert settings["pullResources"] == defaults.pull_resources


def test_every_top_level_value_is_documented() -> None:
    """Each top-level key of values.yaml has a comment right above it (nested keys are documented in place)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = [
        line.split(":")[0]
        for index, line in enumerate(lines)
        if re.match(r"^[A-Za-z]\w*:", line) and not lines[index - 1].lstrip().startswith("#")
    ]
    assert undocumented == []
    assert set(VALUES) == set(SCHEMA["properties"]) - {"global"}  # and the schema knows every one
