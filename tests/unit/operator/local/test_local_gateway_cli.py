"""`slm run`, `list`, `ps`, `show` and `bench` against cluster models: the runtime's app with the fake engine stands
in for slm-gateway (same API) on 127.0.0.1, reached at a URL (--host, $SLM_GATEWAY) or through a stand-in of the
apiserver's service proxy (--context with a kubeconfig)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_stand_in import REPLY, apiserver, kubeconfig, runtime_app, serving

from slm_operator.cli import build_parser, main
from slm_operator.local.remote import GatewayClient, ServiceRef, url_endpoint

MODEL = "team-a/assistant"
SECURE = "team-b/secure"
GATEWAY_KEY = "sk-gateway"
TOKEN = "kube-token"
SERVICE = ServiceRef("slm-system", "slm-operator-gateway")


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    with serving(runtime_app(MODEL)) as url:
        client = GatewayClient(url_endpoint(url))
        for _ in client.generate(MODEL, "warm"):  # the first request waits for the (instant) load
            pass
        client.close()
        yield url


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """An apiserver stand-in proxying to a gateway that wants a key; yields the apiserver URL."""
    with serving(apiserver(runtime_app(SECURE, api_key=GATEWAY_KEY), SERVICE, TOKEN)) as url:
        yield url


@pytest.fixture(autouse=True)
def _no_gateway_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLM_GATEWAY", "SLM_GATEWAY_SERVICE", "SLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_run_streams_the_gateways_answer(gateway: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", MODEL, "Say", "hello.", "--host", gateway]) == 0
    assert capsys.readouterr().out == REPLY + "\n"


def test_the_gateway_may_come_from_the_environment(
    gateway: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLM_GATEWAY", gateway)
    assert main(["run", MODEL, "hi"]) == 0
    assert capsys.readouterr().out == REPLY + "\n"
    # an explicit --url is the local server again, whatever $SLM_GATEWAY says
    assert main(["run", "nosuchmodel", "hi", "--url", "http://127.0.0.1:9", "--cache", "/nonexistent"]) == 1
    assert "is not a file, a model source or a model in the cache" in capsys.readouterr().err


def test_interactive_run_checks_the_model_first(
    gateway: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal:
        def isatty(self) -> bool:
            return True

    lines = iter(["hi", "/bye"])
    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr("builtins.input", lambda _: next(lines))
    assert main(["run", MODEL, "--host", gateway]) == 0
    assert capsys.readouterr().out == REPLY + "\n\n"
    assert main(["run", "team-a/nope", "--host", gateway]) == 1
    assert capsys.readouterr().err == (
        f"Error: model 'team-a/nope' not found at the gateway at {gateway}; it serves: {MODEL}:latest\n"
    )


def test_an_unknown_model_lists_what_the_gateway_serves(gateway: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "team-b/nope", "hi", "--host", gateway]) == 1
    err = capsys.readouterr().err
    assert f"model 'team-b/nope' not found at the gateway at {gateway}; it serves: {MODEL}:latest" in err


def test_list_ps_and_show(gateway: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--host", gateway]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED"] and row.startswith(MODEL)
    assert main(["ls", "--host", gateway, "--json"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == [f"{MODEL}:latest"]
    assert main(["ps", "--host", gateway]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:2] == ["NAME", "ID"] and row.startswith(MODEL)
    assert main(["show", MODEL, "--host", gateway]) == 0
    assert f"name            {MODEL}" in capsys.readouterr().out


def test_bench_runs_against_the_gateway(gateway: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", MODEL, "--host", gateway, "--runs", "2", "--tokens", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == MODEL and report["load_seconds"] is None
    assert [run["generated_tokens"] for run in report["runs"]] == [4, 4]


def test_a_local_server_and_a_gateway_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ps", "--url", "http://127.0.0.1:9", "--host", "http://127.0.0.1:9"]) == 1
    assert "--url names a local server, --host and --context a gateway: pass one" in capsys.readouterr().err


def test_unreachable_gateway(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ps", "--host", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: cannot reach the gateway at http://127.0.0.1:9: ")
    assert "check the URL (--host, $SLM_GATEWAY) and that slm-gateway runs there" in err


def test_through_the_current_kube_context(cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(kubeconfig(tmp_path / "config", cluster, token=TOKEN))
    kube = ["--kubeconfig", config, "--context"]
    assert main(["run", SECURE, "hi", "--api-key", GATEWAY_KEY, *kube]) == 0
    assert capsys.readouterr().out == REPLY + "\n"
    assert main(["list", "--api-key", GATEWAY_KEY, *kube]) == 0
    assert SECURE in capsys.readouterr().out
    assert main(["run", SECURE, "hi", *kube]) == 1  # no gateway key
    err = capsys.readouterr().err
    assert "the gateway slm-system/slm-operator-gateway through kube context 'stand-in'" in err
    assert "(HTTP 401: " in err and "pass the gateway's API key with --api-key or $SLM_API_KEY" in err


def test_kube_context_errors(cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = str(kubeconfig(tmp_path / "wrong", cluster, token="expired", context="old"))
    assert main(["ps", "--kubeconfig", wrong, "--context=old"]) == 1
    assert "the Kubernetes API server of kube context 'old' refused its credentials" in capsys.readouterr().err
    config = str(kubeconfig(tmp_path / "config", cluster, token=TOKEN))
    assert main(["ps", "--kubeconfig", config, "--context", "--gateway-service", "ai/gw"]) == 1
    assert "has no gateway Service ai/gw port 'http'" in capsys.readouterr().err
    assert main(["run", "--kubeconfig", config, "--context", SECURE, "hi", "there"]) == 1  # it took MODEL
    assert "write --context=NAME, or put --context after MODEL" in capsys.readouterr().err


def test_a_model_waking_from_zero_is_waited_for(capsys: pytest.CaptureFixture[str]) -> None:
    sleepy = "team-a/sleepy"
    with serving(runtime_app(sleepy, load_seconds=1.6, request_timeout=0.5)) as url:
        notes: list[str] = []
        with GatewayClient(url_endpoint(url), notify=notes.append, waiting_after=0.2) as client:
            assert "".join(chunk.text for chunk in client.generate(sleepy, "hi")) == REPLY
    waking = f"waking {sleepy}… (model {sleepy} is still loading, retry shortly)"
    assert notes[0] == f"waiting for {sleepy}…" and waking in notes and notes[-1] == ""


def test_help_tells_how_to_reach_cluster_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside hyphenated names
    parser = build_parser()
    top = " ".join(parser.format_help().split())
    assert "Cluster models: --host URL, or --context [NAME]" in top and "$SLM_GATEWAY=URL|kube|kube:NAME" in top
    assert "--host URL, --context" not in top
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    assert isinstance(subcommands, dict)
    for name in ("run", "bench", "list", "ps", "show"):
        text = " ".join(subcommands[name].format_help().split())
        assert "cluster models (slm-gateway)" in text and "--context [NAME]" in text, name
        assert "slm-system/slm-operator-gateway" in text and "--wake-timeout SECONDS" in text, name
