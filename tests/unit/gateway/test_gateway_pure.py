"""The gateway's pure parts: catalog events, model names, body rewriting, prompt prefixes, endpoint choice,
API keys and settings."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from gateway_fast import MODEL, endpoint_slice, slm

from slm_gateway.balance import HashRing, bounded_affinity, hash_text, least_loaded, ring_for
from slm_gateway.body import BodyError, parse_body, prefix_text
from slm_gateway.catalog import Catalog, Delete, Endpoint, Kind, Resync, Upsert, endpoints_of_slice, model_of
from slm_gateway.cli import build_parser, settings_from_args
from slm_gateway.keys import OPEN, KeyFile, KeyRing, KeysError, bearer_token, load_keys, presented_key
from slm_gateway.settings import GatewaySettings, SettingsError, WakeMode, settings_from_sources
from slm_operator.api.gateway import model_id

# ------------------------------------------------------------------------------------------------- catalog


def test_model_of_reads_the_served_name_phase_and_scale_to_zero() -> None:
    model = model_of(slm("team-a", "assistant", min_replicas=0))
    assert model is not None
    assert (model.id, model.served_name, model.phase, model.at_zero) == ("team-a/assistant", MODEL, "Ready", True)
    assert model.digest.startswith("sha256:") and model.size_bytes == 1234
    plain = slm("team-a", "plain")
    plain["spec"]["model"] = {"source": "ollama://qwen2.5:3b"}
    parsed = model_of(plain)
    assert parsed is not None and parsed.served_name == "qwen2.5:3b" and not parsed.at_zero
    assert model_of({"metadata": {"name": "x", "namespace": "y"}, "spec": {"model": {"source": "nope"}}}) is None
    # Scale to zero as the API defines it (AutoscalingSpec.scales_to_zero), whatever the phase; and a newer
    # operator's unknown fields do not stop the gateway from reading the rest.
    loading = slm("team-a", "later", phase="Loading", min_replicas=0)
    loading["spec"]["autoscaling"]["someFutureField"] = 1
    loading["spec"]["model"]["someFutureField"] = 1
    later = model_of(loading)
    assert later is not None and later.scales_to_zero and later.at_zero and later.served_name == MODEL
    waking = model_of(slm("team-a", "waking", phase="Waking"))
    assert waking is not None and waking.at_zero and waking.listed and not waking.scales_to_zero


def test_slice_endpoints_use_the_http_port_and_unset_ready_means_ready() -> None:
    obj = endpoint_slice("ns", "m", [("10.0.0.1", 8000), ("10.0.0.2", 8000, False)])
    obj["endpoints"].append({"addresses": ["10.0.0.3"], "conditions": {}})
    assert endpoints_of_slice(obj) == (
        Endpoint("10.0.0.1", 8000, True),
        Endpoint("10.0.0.2", 8000, False),
        Endpoint("10.0.0.3", 8000, True),
    )
    assert endpoints_of_slice({**obj, "ports": [{"name": "metrics", "port": 9000}]}) == ()
    assert Endpoint("fd00::1", 80).url == "http://[fd00::1]:80"


def test_catalog_events_report_the_models_whose_routing_changed() -> None:
    catalog = Catalog()
    assert not catalog.ready
    assert catalog.apply(Resync(Kind.SLM, None, (slm("a", "m"), slm("b", "m")))) == {"a/m", "b/m"}
    assert catalog.apply(Resync(Kind.SLICE, None, ())) == set()
    assert catalog.ready
    assert catalog.apply(Upsert(Kind.SLICE, endpoint_slice("a", "m", [("10.0.0.1", 80)]))) == {"a/m"}
    assert catalog.endpoints("a/m") == (Endpoint("10.0.0.1", 80),)
    assert catalog.apply(Upsert(Kind.SLICE, endpoint_slice("a", "m", [("10.0.0.1", 80)]))) == set()  # no change
    second = endpoint_slice("a", "m", [("10.0.0.2", 81)], name="m-other")
    assert catalog.apply(Upsert(Kind.SLICE, second)) == {"a/m"}
    assert [e.url for e in catalog.endpoints("a/m")] == ["http://10.0.0.1:80", "http://10.0.0.2:81"]
    assert catalog.apply(Delete(Kind.SLICE, second)) == {"a/m"}
    assert catalog.endpoints("b/m") == ()
    # A relist drops what it no longer has, in its namespace only.
    assert catalog.apply(Resync(Kind.SLM, "a", ())) == {"a/m"}
    assert set(catalog.models) == {("b", "m")}
    assert catalog.apply(Upsert(Kind.SLM, slm("b", "m", phase="Loading"))) == {"b/m"}
    # A slice whose Service is not a model is kept (its SLMDeployment may arrive later) but routes nothing.
    assert catalog.apply(Upsert(Kind.SLICE, endpoint_slice("c", "web", [("10.0.0.9", 80)]))) == {"c/web"}


def test_names_resolve_by_id_or_by_a_bare_name_that_is_unique() -> None:
    catalog = Catalog()
    catalog.apply(Resync(Kind.SLM, None, (slm("a", "shared"), slm("b", "shared"), slm("a", "only"))))
    assert catalog.resolve("a/shared") == catalog.get("a/shared")
    assert catalog.resolve("only") == catalog.get("a/only") == catalog.resolve("only:latest")
    assert catalog.resolve("shared") is None  # two namespaces have it: ambiguous
    visible = [m for m in catalog.models.values() if m.namespace == "b"]
    assert catalog.resolve("shared", visible) == catalog.get("b/shared")
    assert catalog.resolve("c/shared") is None and catalog.resolve("nope") is None


def test_listed_models_are_ready_at_zero_or_serving() -> None:
    catalog = Catalog()
    models = (
        slm("a", "ready"),
        slm("a", "zero", phase="ScaledToZero"),
        slm("a", "waking", phase="Waking"),
        slm("a", "loading", phase="Loading"),
        slm("a", "degraded", phase="Degraded"),
        slm("a", "failed", phase="Failed"),
    )
    catalog.apply(Resync(Kind.SLM, None, models))
    catalog.apply(Upsert(Kind.SLICE, endpoint_slice("a", "degraded", [("10.0.0.1", 80)])))
    assert [m.id for m in catalog.listed()] == ["a/degraded", "a/ready", "a/waking", "a/zero"]
    zero = catalog.get("a/zero")
    assert zero is not None and zero.at_zero


# ---------------------------------------------------------------------------------------------------- body


def test_only_the_model_value_is_rewritten_and_every_other_byte_kept() -> None:
    raw = b'{ "messages" : [{"role":"user","content":"caf\xc3\xa9 \\u00e9"}],\n  "model":"team-a/x" ,"stream":true}'
    body = parse_body(raw)
    assert body.model == "team-a/x"
    assert body.with_model("qwen2.5:3b") == raw.replace(b'"team-a/x"', b'"qwen2.5:3b"')
    assert body.with_model("team-a/x") == raw
    escaped = parse_body(b'{"model": "te\\u0061m/x", "model": "b/y"}')  # duplicates: the last wins, all renamed
    assert escaped.model == "b/y" and escaped.with_model("m") == b'{"model": "m", "model": "m"}'
    show = parse_body(b'{"name": "a/b"}')
    assert show.model == "a/b" and show.with_model("m") == b'{"name": "m"}'
    assert parse_body(b'{"model": ""}').model is None and parse_body(b"{}").model is None


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"model": "x"', b'{"model": "x"} x', b'{"a" 1}', b"\xff", b'{"a":1,}'])
def test_bodies_that_are_not_one_json_object_are_refused(raw: bytes) -> None:
    with pytest.raises(BodyError):
        parse_body(raw)


def test_body_values_equal_the_standard_parser() -> None:
    text = json.dumps({"model": "m", "n": [1, 2.5, None, True], "o": {"k": "v\u2028"}, "s": "\x00"})
    assert parse_body(text.encode()).values == json.loads(text)


def test_prefix_text_renders_messages_or_system_and_prompt() -> None:
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    assert prefix_text(chat, 100) == "system: Be brief.\nuser: Hi\n"
    assert prefix_text(chat, 6) == "system"
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]}
    assert prefix_text(parts, 100) == "user: a\n"
    assert prefix_text({"system": "S", "prompt": "P"}, 100) == "S\nP"
    assert prefix_text({"prompt": ["first", "second"]}, 100) == "first"
    assert prefix_text({"input": "embed me"}, 100) is None


# ----------------------------------------------------------------------------------------- endpoint choice


def test_least_loaded_picks_the_fewest_in_flight_and_rotates_among_equals() -> None:
    urls = ("a", "b", "c")
    assert least_loaded(urls, {"a": 2, "b": 1, "c": 3}) == "b"
    assert [least_loaded(urls, {}, turn) for turn in range(4)] == ["a", "b", "c", "a"]
    assert least_loaded(urls, {"a": 1}, 0) == "b"
    with pytest.raises(ValueError):
        least_loaded((), {})


def test_hash_ring_is_stable_and_moves_few_keys_when_a_member_leaves() -> None:
    members = tuple(f"http://10.0.0.{i}:80" for i in range(4))
    keys = [hash_text(f"prefix {i}") for i in range(2000)]
    ring = HashRing(members)
    owner = {k: next(ring.walk(k)) for k in keys}
    assert set(owner.values()) == set(members)
    assert max(Counter(owner.values()).values()) < 2000 * 0.4  # roughly balanced
    smaller = HashRing(members[:3])
    moved = [k for k in keys if next(smaller.walk(k)) != owner[k]]
    assert all(owner[k] == members[3] for k in moved)  # only the keys of the member that left move
    assert list(ring.walk(keys[0])) == list(HashRing(members).walk(keys[0])) and len(list(ring.walk(0))) == 4
    assert ring_for(members) is ring_for(members)


def test_bounded_affinity_keeps_a_prefix_on_its_pod_until_that_pod_is_overloaded() -> None:
    members = ("a", "b", "c", "d")
    ring = HashRing(members)
    key = hash_text("You are a helpful assistant.")
    home = next(ring.walk(key))
    assert bounded_affinity(ring, key, {}, 1.25) == home
    assert bounded_affinity(ring, key, dict.fromkeys(members, 2), 1.25) == home  # equal load: stay home
    # home has 3, the others 1: total 6, capacity ceil(1.25 * 7 / 4) = 3; home would go to 4 -> next one.
    load = dict.fromkeys(members, 1) | {home: 3}
    chosen = bounded_affinity(ring, key, load, 1.25)
    assert chosen != home and chosen == next(m for m in ring.walk(key) if m != home)
    # No pod takes more than its bound, whatever the keys: feed many requests that all share one prefix.
    load = Counter[str]()
    for _ in range(40):
        load[bounded_affinity(ring, key, load, 1.25)] += 1
    assert max(load.values()) <= -(-1.25 * 40 // 4) + 1


# ---------------------------------------------------------------------------------------------------- keys


def test_keys_grant_namespaces_and_models(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(
        "- key: sk-a\n  namespaces: [team-a]\n- key: sk-b\n  models: [team-b/assistant, shared]\n- key: sk-all\n"
    )
    ring = load_keys(path)
    a, b, everyone = (ring.access(f"Bearer {k}") for k in ("sk-a", "sk-b", "sk-all"))
    assert ring.access(None) is None and ring.access("Bearer nope") is None and ring.access("Basic sk-a") is None
    models = [m for m in (model_of(slm(ns, n)) for ns, n in [("team-a", "x"), ("team-b", "assistant"),
                                                           ("team-c", "shared"), ("team-c", "y")]) if m]  # fmt: skip
    assert a is not None and b is not None and everyone is not None
    assert [m.id for m in a.visible(models)] == ["team-a/x"]
    assert [m.id for m in b.visible(models)] == ["team-b/assistant", "team-c/shared"]
    assert len(everyone.visible(models)) == 4
    assert KeyRing.open().access(None) is OPEN and OPEN.sees(models[0])
    assert bearer_token("bearer  tok ") == "tok" and bearer_token("Bearer ") is None
    # X-API-Key (the slm CLI's header through the apiserver) grants the same, and wins over a bearer token.
    assert ring.access(None, "sk-a") == a and ring.access("Bearer sk-b", "sk-a") == a
    assert ring.access("Bearer sk-a", "nope") is None and ring.access("Bearer sk-a", " ") is None
    assert presented_key("Bearer t", None) == "t" and presented_key(None, " k ") == "k" and presented_key(None) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("key: x", "YAML list"),
        ("- namespaces: [a]", "non-empty string 'key'"),
        ("- key: x\n  namespace: [a]", "unknown field"),
        ("- key: x\n  models: a", "list of strings"),
        ("- key: x\n- key: x", "repeats a key"),
    ],
)
def test_bad_keys_files_name_the_entry_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(KeysError, match=message):
        load_keys(path)


def test_a_changed_keys_file_is_reloaded_and_a_broken_one_ignored(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("- key: old\n")
    now = [0.0]
    keys = KeyFile(path, check_every=1.0, clock=lambda: now[0])
    assert keys.current.access("Bearer old") is not None
    path.write_text("- key: new\n")
    import os

    os.utime(path, (1, 1))
    assert keys.current.access("Bearer new") is None  # not checked again yet
    now[0] = 2.0
    assert keys.current.access("Bearer new") is not None and keys.current.access("Bearer old") is None
    path.write_text("not: a list\n")
    os.utime(path, (2, 2))
    now[0] = 4.0
    assert keys.current.access("Bearer new") is not None


# ------------------------------------------------------------------------------------------------ settings


def test_flags_win_over_environment_over_defaults() -> None:
    args = build_parser().parse_args(["--namespace", "a", "--namespace", "b", "--prefix-affinity", "--max-held", "7"])
    settings = settings_from_args(args)
    assert settings.namespaces == ("a", "b") and settings.prefix_affinity and settings.max_held == 7
    env = {"SLM_GATEWAY_NAMESPACES": "x, y", "SLM_GATEWAY_WAKE": "metric", "SLM_GATEWAY_MAX_HELD": "3"}
    from_env = settings_from_sources({"max_held": 9}, env)
    assert from_env.namespaces == ("x", "y") and from_env.wake is WakeMode.METRIC and from_env.max_held == 9
    assert GatewaySettings().port == 11434 and GatewaySettings().wake is WakeMode.DIRECT
    with pytest.raises(SettingsError, match="SLM_GATEWAY_WAKE_TIMEOUT"):
        settings_from_sources({}, {"SLM_GATEWAY_WAKE_TIMEOUT": "-1"})
    with pytest.raises(SettingsError, match="--affinity-load-factor"):
        settings_from_sources({"affinity_load_factor": 0.5}, {})


def test_model_ids_are_the_contracts() -> None:
    assert model_id("team-a", "assistant") == "team-a/assistant"
