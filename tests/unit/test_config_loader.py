"""Strict config loader: scenarios S139–S146 and exact messages for broken files (§11)."""

from __future__ import annotations

import copy
import json
import math
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.loader import ConfigError, load_config, parse_config
from gateway.config.model import Config

DATA = Path(__file__).resolve().parent.parent / "data"
P = "/etc/gateway/gateway.toml"
REFERENCE_SITES = ("netto", "avero", "dev", "sim", "grandi")
NO_BROKER = "[mqtt].host: no embedded broker; a broker must listen on localhost:1883"
DEPRECATED = "[authorization].min_dwell_ms: deprecated, use [pos_tracking].min_dwell_ms"
HTTP_PORT = "[metrics].prometheus_port: not set; HTTP port is 9090 (reference default 80)"
BASE: dict[str, Any] = tomllib.loads((DATA / "dts.toml").read_text("utf-8"))


def _val(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_val(x) for x in v) + "]"
    return json.dumps(v)


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def dump(doc: dict[str, Any], prefix: str = "") -> str:
    """Tiny TOML writer for test documents (scalars, arrays, nested tables)."""
    out = [f"[{prefix}]"] if prefix else []
    out += [f"{_key(k)} = {_val(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            out.append(dump(v, f"{prefix}.{_key(k)}" if prefix else _key(k)))
    return "\n".join(out) + "\n"


def build(mutate: Callable[[dict[str, Any]], None] | None = None) -> Config:
    doc = copy.deepcopy(BASE)
    if mutate is not None:
        mutate(doc)
    return parse_config(dump(doc), P)


def errors(mutate: Callable[[dict[str, Any]], None]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build(mutate)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def err(key: str, problem: str) -> str:
    return f"config error: {P}: {key}: {problem}"


def test_dts_fixture_round_trips_through_the_test_writer() -> None:
    direct = load_config(DATA / "dts.toml")
    rebuilt = build()
    assert rebuilt.zones == direct.zones
    assert rebuilt.acc == direct.acc
    assert rebuilt.site.id == "test"
    assert rebuilt.path == P


# --- S139 reference sites ---------------------------------------------------------------------


def test_s139_reference_sites_load_with_expected_values_and_warnings() -> None:
    cfgs = {name: load_config(DATA / f"{name}.toml") for name in REFERENCE_SITES}
    netto = cfgs["netto"]
    assert netto.zones.gate_zone == 1000
    assert netto.zones.name(1001) == "POS_3"
    assert netto.acc.ip_to_pos["10.120.48.211"] == "POS_1"
    assert netto.zones.zone_id_by_name("POS_1") == 1004
    assert netto.zones.is_store(1009)
    assert netto.gate.http_url.startswith("http://")
    assert netto.mqtt_egress.host == "command.example.net"
    assert netto.analysis_log.enabled
    assert netto.analysis_log.rotation == "daily"
    assert cfgs["avero"].zones.dwell_zones == (1010,)
    assert not cfgs["avero"].acc.listener_enabled
    assert cfgs["dev"].site.id == "gateway"
    assert cfgs["dev"].pos_tracking.min_dwell_ms == 3000
    assert cfgs["sim"].broker_enabled
    assert cfgs["sim"].metrics.prometheus_port == 9091
    assert cfgs["grandi"].acc.ip_to_pos == {}
    assert HTTP_PORT in cfgs["grandi"].warnings
    for name, cfg in cfgs.items():
        deprecated = any(w.startswith(DEPRECATED) for w in cfg.warnings)
        assert deprecated == (name in ("dev", "sim", "grandi")), name
        assert (NO_BROKER in cfg.warnings) == (name != "sim"), name
    assert "[acc].flicker_merge_s: accepted, no effect" in netto.warnings
    assert "[acc].recent_exit_window_ms: accepted, no effect" in netto.warnings


def test_demo_and_dts_fixtures_are_valid() -> None:
    demo = load_config(DATA / "demo.toml")
    assert demo.broker_enabled
    assert demo.warnings == ()
    assert demo.egress.rotate == "daily"
    assert demo.http.bind == "127.0.0.1"
    dts = load_config(DATA / "dts.toml")
    assert dts.zones.name(1012) == "ZONE_1012"
    assert dts.zones.is_store(1011)
    assert dts.acc.ip_to_pos == {"127.0.0.1": "POS_1", "127.0.0.2": "POS_2"}
    assert dts.rs485.enabled
    assert dts.rs485.unknown_after_failures == 8


# --- S140–S142 file and type errors --------------------------------------------------------------


def test_s140_missing_file_names_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("/nope.toml")
    assert info.value.errors == [
        "config error: /nope.toml: cannot read file (No such file or directory)"
    ]


def test_directory_and_non_utf8_are_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.errors == [f"config error: {tmp_path}: cannot read file (Is a directory)"]
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[site]\nid = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.errors == [
        f"config error: {bad}: cannot read file (not valid UTF-8: byte 0xe9 on line 2)"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(tmp_path: Path) -> None:
    locked = tmp_path / "locked.toml"
    locked.write_text("", "utf-8")
    locked.chmod(0)
    with pytest.raises(ConfigError) as info:
        load_config(locked)
    assert info.value.errors == [f"config error: {locked}: cannot read file (Permission denied)"]


def test_s141_misspelt_gate_mode_is_named_with_a_suggestion() -> None:
    def moed(d: dict[str, Any]) -> None:
        d["gate"]["moed"] = d["gate"].pop("mode")

    assert errors(moed) == [
        err("[gate].mode", "missing required key"),
        err("[gate].moed", "unknown key (did you mean 'mode'?)"),
    ]


def test_s142_wrong_type_out_of_range_and_syntax_error() -> None:
    assert errors(lambda d: d["rs485"].update(baud="19200")) == [
        err("[rs485].baud", 'expected integer, got string "19200"')
    ]
    assert errors(lambda d: d["mqtt"].update(port=70000)) == [
        err("[mqtt].port", "70000 is out of range 1–65535")
    ]
    with pytest.raises(ConfigError) as info:
        parse_config('[site]\nid = "x"\n[gate\nmode = "tcp"\n', P)
    assert info.value.errors == [
        f"config error: {P}: line 3, column 6: TOML syntax error: "
        "Expected ']' at the end of a table declaration"
    ]


# --- S143 min dwell --------------------------------------------------------------------------


def test_s143_min_dwell_and_deprecated_authorization_key() -> None:
    def both(pos: int | None, auth: int | None) -> Callable[[dict[str, Any]], None]:
        def mutate(d: dict[str, Any]) -> None:
            d["pos_tracking"].pop("min_dwell_ms")
            if pos is not None:
                d["pos_tracking"]["min_dwell_ms"] = pos
            if auth is not None:
                d["authorization"] = {"min_dwell_ms": auth}

        return mutate

    assert errors(both(7000, 5000)) == [
        err(
            "[authorization].min_dwell_ms", "5000 conflicts with [pos_tracking].min_dwell_ms = 7000"
        )
    ]
    same = build(both(7000, 7000))
    assert same.pos_tracking.min_dwell_ms == 7000
    assert f"{DEPRECATED} (same value, ignored)" in same.warnings
    only_old = build(both(None, 6000))
    assert only_old.pos_tracking.min_dwell_ms == 6000
    assert f"{DEPRECATED} (6000 ms applied)" in only_old.warnings
    neither = build(both(None, None))
    assert neither.pos_tracking.min_dwell_ms == 7000
    assert not any(w.startswith(DEPRECATED) for w in neither.warnings)


# --- S144 defaults ---------------------------------------------------------------------------


MINIMAL = """
[mqtt]
host = "broker.lan"
[gate]
mode = "tcp"
tcp_addr = "10.0.0.2:8000"
[zones]
pos_zones = [5]
gate_zone = 6
exit_line = 7
"""


def test_s144_defaults_of_a_minimal_file() -> None:
    cfg = parse_config(MINIMAL, P)
    assert cfg.pos_tracking.exit_grace_ms == 5000
    assert cfg.pos_tracking.min_dwell_ms == 7000
    ex = cfg.exit_detection
    assert (ex.position_threshold_y_m, ex.position_threshold_x_min_m) == (2.3, 1.5)
    assert ex.position_threshold_x_max_m == 3.0
    assert cfg.acc.listener_port == 25803
    assert cfg.acc.ip_to_pos == {}
    assert cfg.egress.file == "journeys.jsonl"
    assert (cfg.egress.rotate, cfg.egress.rotate_mb) == ("none", 0)
    names = ("journeys", "events", "metrics", "gate", "tracks", "acc", "positions")
    assert cfg.mqtt_egress.topics == tuple(f"gateway/{n}" for n in names)
    assert cfg.mqtt_egress.metrics_publish_interval_secs == 5
    assert (cfg.mqtt_egress.host, cfg.mqtt_egress.port) == ("broker.lan", 1883)
    assert cfg.zones.name(5) == "ZONE_5"
    assert cfg.site.id == "gateway"
    assert cfg.metrics.prometheus_port == 9090
    assert cfg.broker is None
    assert not cfg.rs485.enabled
    assert cfg.queues.events == 1000
    assert cfg.queues.ws_client == 256
    assert cfg.analysis_log.rotation == "daily"
    assert cfg.warnings == (HTTP_PORT,)


def test_mqtt_egress_falls_back_to_mqtt_key_by_key() -> None:
    def creds(d: dict[str, Any]) -> None:
        d["mqtt"].update(port=1884, username="u", password="p")
        d["mqtt_egress"] = {"host": "central.example.net"}

    egress = build(creds).mqtt_egress
    assert (egress.host, egress.port, egress.username, egress.password) == (
        "central.example.net",
        1884,
        "u",
        "p",
    )
    assert egress.enabled


# --- S145 broker section ---------------------------------------------------------------------


def test_s145_broker_runs_only_with_a_section_not_disabled() -> None:
    present = build(lambda d: d.update(broker={"port": 1883}))
    assert present.broker_enabled
    assert NO_BROKER not in present.warnings
    disabled = build(lambda d: d.update(broker={"enabled": False}))
    assert disabled.broker is not None
    assert not disabled.broker_enabled
    assert NO_BROKER in disabled.warnings
    absent = build()
    assert absent.broker is None
    assert not absent.broker_enabled


# --- S146 cross-key rules --------------------------------------------------------------------


def test_s146_unknown_pos_name_in_ip_to_pos() -> None:
    assert errors(lambda d: d["acc"]["ip_to_pos"].update({"10.0.0.9": "POS_9"})) == [
        err('[acc.ip_to_pos]."10.0.0.9"', "'POS_9' is not the name of a POS or DWELL zone")
    ]


def test_s146_two_pos_zones_named_alike() -> None:
    assert errors(lambda d: d["zones"]["names"].update({"1002": "POS_1"})) == [
        err(
            "[zones.names].1002",
            "'POS_1' names both zone 1001 and zone 1002 (POS/DWELL names are unique)",
        )
    ]


def test_s146_bad_rotation_size() -> None:
    assert errors(lambda d: d.update(egress={"rotate": "size:abc"})) == [
        err("[egress].rotate", "'size:abc': size must be a whole number of MB 1–100000")
    ]


def test_s146_pos_zone_also_dwell() -> None:
    assert errors(lambda d: d["zones"].update(dwell_zones=[1010, 1003])) == [
        err("[zones].dwell_zones", "1003 is already used by [zones].pos_zones")
    ]


def test_s146_broker_port_equals_http_port_on_one_address() -> None:
    def clash(d: dict[str, Any]) -> None:
        d["broker"] = {"bind_address": "0.0.0.0", "port": 9090}
        d["metrics"] = {"prometheus_port": 9090}

    assert errors(clash) == [
        err(
            "[broker].port",
            "port 9090 on 0.0.0.0 clashes with the HTTP server ([metrics].prometheus_port) "
            "on 0.0.0.0",
        )
    ]


# --- more broken files, each with its exact message ------------------------------------------

BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], list[tuple[str, str]]]] = [
    (
        "unknown_section",
        lambda d: d.update(brokr={"port": 1883}),
        [("[brokr]", "unknown section (did you mean 'broker'?)")],
    ),
    (
        "unknown_subsection",
        lambda d: d["zones"].update(nmes={"1": "A"}),
        [("[zones.nmes]", "unknown section (did you mean 'zones.names'?)")],
    ),
    (
        "unknown_key_no_hint",
        lambda d: d["site"].update(colour="red"),
        [("[site].colour", "unknown key")],
    ),
    (
        "bool_is_not_int",
        lambda d: d["acc"].update(listener_enabled=1),
        [("[acc].listener_enabled", "expected boolean, got integer 1")],
    ),
    (
        "int_is_not_bool",
        lambda d: d["gate"].update(door=True),
        [("[gate].door", "expected integer, got boolean true")],
    ),
    (
        "int_is_not_float",
        lambda d: d["pos_tracking"].update(exit_grace_ms=5000.0),
        [("[pos_tracking].exit_grace_ms", "expected integer, got float 5000.0")],
    ),
    (
        "non_finite_float",
        lambda d: d["exit_detection"].update(position_threshold_y_m=math.nan),
        [("[exit_detection].position_threshold_y_m", "nan is not a finite number")],
    ),
    (
        "x_min_above_x_max",
        lambda d: d["exit_detection"].update(position_threshold_x_min_m=3.5),
        [
            (
                "[exit_detection].position_threshold_x_min_m",
                "3.5 is greater than position_threshold_x_max_m 3.0",
            )
        ],
    ),
    (
        "names_key_not_integer",
        lambda d: d["zones"]["names"].update(gate="GATE_2"),
        [("[zones.names].gate", "key must be an integer zone id")],
    ),
    (
        "ip_to_pos_key_not_ip",
        lambda d: d["acc"]["ip_to_pos"].update(kiosk="POS_3"),
        [("[acc.ip_to_pos].kiosk", "key is not an IP address")],
    ),
    (
        "ip_to_pos_gate_is_not_pos",
        lambda d: d["acc"]["ip_to_pos"].update({"10.0.0.7": "GATE_1"}),
        [('[acc.ip_to_pos]."10.0.0.7"', "'GATE_1' is not the name of a POS or DWELL zone")],
    ),
    (
        "allowed_ips",
        lambda d: d["acc"].update(allowed_ips=["10.0.0.0/8", "10.1.2.3/16", "kiosk"]),
        [
            (
                "[acc].allowed_ips[1]",
                "'10.1.2.3/16' has host bits set (did you mean '10.1.0.0/16'?)",
            ),
            ("[acc].allowed_ips[2]", "'kiosk' is not an IP address or CIDR network"),
        ],
    ),
    (
        "egress_topic_wildcard",
        lambda d: d.update(mqtt_egress={"journeys_topic": "gw/#", "acc_topic": "gw/+/acc"}),
        [
            ("[mqtt_egress].journeys_topic", "'gw/#' must not contain the wildcards '+' or '#'"),
            ("[mqtt_egress].acc_topic", "'gw/+/acc' must not contain the wildcards '+' or '#'"),
        ],
    ),
    (
        "ingress_topic_filter",
        lambda d: d["mqtt"].update(topic="a/#/b"),
        [("[mqtt].topic", "'a/#/b' is not a valid MQTT topic filter")],
    ),
    ("missing_mqtt", lambda d: d.pop("mqtt"), [("[mqtt].host", "missing required key")]),
    (
        "section_not_a_table",
        lambda d: d.update(site="x"),
        [("[site]", 'expected table, got string "x"')],
    ),
    (
        "array_element_type",
        lambda d: d["zones"].update(pos_zones=[1001, "1002"]),
        [("[zones].pos_zones[1]", 'expected integer, got string "1002"')],
    ),
    (
        "lines_not_distinct",
        lambda d: d["zones"].update(entry_line=1006),
        [("[zones].entry_line", "1006 is already used by [zones].exit_line")],
    ),
    (
        "store_in_gate",
        lambda d: d["zones"].update(store_zone=1007),
        [("[zones].store_zone", "1007 is already used by [zones].gate_zone")],
    ),
    (
        "pos_listed_twice",
        lambda d: d["zones"].update(pos_zones=[1001, 1001]),
        [("[zones].pos_zones", "1001 is listed twice")],
    ),
    (
        "unnamed_zone_fallback_duplicate",
        lambda d: d["zones"].update(dwell_zones=[1010, 1020], names={"1010": "ZONE_1020"}),
        # names replaced: POS zones fall back too, only the explicit name is blamed
        [
            (
                "[zones.names].1010",
                "'ZONE_1020' names both zone 1010 and zone 1020 (POS/DWELL names are unique)",
            )
        ],
    ),
    (
        "http_mode_needs_url",
        lambda d: d["gate"].update(mode="http"),
        [("[gate].http_url", "must not be empty when mode is 'http'")],
    ),
    (
        "gate_mode_choice",
        lambda d: d["gate"].update(mode="udp"),
        [("[gate].mode", "'udp' is not one of 'tcp', 'http'")],
    ),
    (
        "tcp_addr_shape",
        lambda d: d["gate"].update(tcp_addr="controller"),
        [("[gate].tcp_addr", "'controller' is not host:port")],
    ),
    (
        "rs485_enabled_without_device",
        lambda d: d["rs485"].pop("device"),
        [("[rs485].device", "missing required key (rs485 is enabled)")],
    ),
    (
        "baud_not_standard",
        lambda d: d["rs485"].update(baud=19201),
        [
            (
                "[rs485].baud",
                "19201 is not one of 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200",
            )
        ],
    ),
    (
        "analysis_rotation_none",
        lambda d: d.update(analysis_log={"rotation": "none"}),
        [("[analysis_log].rotation", "'none' is not one of 'daily', 'size:<MB>'")],
    ),
    (
        "site_id_too_long",
        lambda d: d["site"].update(id="x" * 65),
        [("[site].id", "must be 1–64 characters, got 65 characters")],
    ),
    (
        "bind_not_ip",
        lambda d: d.update(http={"bind": "localhost"}),
        [("[http].bind", "'localhost' is not an IP address")],
    ),
    (
        "acc_port_clashes_with_wildcard_http",
        lambda d: d.update(http={"bind": "127.0.0.1"}, acc={"listener_port": 9090}),
        [
            (
                "[acc].listener_port",
                "port 9090 on 0.0.0.0 clashes with the HTTP server ([metrics].prometheus_port) "
                "on 127.0.0.1",
            )
        ],
    ),
    (
        "negative_no_effect_key",
        lambda d: d["acc"].update(flicker_merge_s=-1),
        [("[acc].flicker_merge_s", "-1 is out of range ≥ 0")],
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), [pytest.param(m, e, id=i) for i, m, e in BROKEN])
def test_broken_config_exact_messages(
    mutate: Callable[[dict[str, Any]], None], expected: list[tuple[str, str]]
) -> None:
    assert errors(mutate) == [err(k, p) for k, p in expected]


def test_every_problem_is_reported_at_once() -> None:
    def many(d: dict[str, Any]) -> None:
        d["mqtt"]["port"] = 0
        d["gate"]["moed"] = "tcp"
        d["rs485"]["baud"] = "19200"
        d["acc"]["ip_to_pos"]["10.0.0.9"] = "POS_9"
        d["nonsense"] = {"a": 1}

    assert errors(many) == [
        err("[mqtt].port", "0 is out of range 1–65535"),
        err("[gate].moed", "unknown key (did you mean 'mode'?)"),
        err("[rs485].baud", 'expected integer, got string "19200"'),
        err('[acc.ip_to_pos]."10.0.0.9"', "'POS_9' is not the name of a POS or DWELL zone"),
        err("[nonsense]", "unknown section"),
    ]


def test_listeners_on_distinct_addresses_or_disabled_do_not_clash() -> None:
    def split(d: dict[str, Any]) -> None:
        d["http"] = {"bind": "127.0.0.1"}
        d["broker"] = {"bind_address": "127.0.0.2", "port": 9090}
        d["acc"]["listener_enabled"] = False
        d["acc"]["listener_port"] = 9090

    assert build(split).broker_enabled
    no_http = build(lambda d: d.update(metrics={"prometheus_port": 0}, acc={"listener_port": 9090}))
    assert no_http.metrics.prometheus_port == 0


def test_values_are_normalised() -> None:
    def shapes(d: dict[str, Any]) -> None:
        d["exit_detection"]["position_threshold_y_m"] = 2  # float accepts an integer
        d["acc"]["ip_to_pos"] = {"::ffff:10.0.0.1": "POS_1", "FE80::1": "DWELL_1"}
        d["egress"] = {"rotate": "size:50"}
        d["analysis_log"] = {"enabled": True, "rotation": "size:7"}

    cfg = build(shapes)
    assert cfg.exit_detection.position_threshold_y_m == 2.0
    assert isinstance(cfg.exit_detection.position_threshold_y_m, float)
    assert cfg.acc.ip_to_pos == {"10.0.0.1": "POS_1", "fe80::1": "DWELL_1"}
    assert (cfg.egress.rotate, cfg.egress.rotate_mb) == ("size", 50)
    assert (cfg.analysis_log.rotation, cfg.analysis_log.rotation_mb) == ("size", 7)
    assert cfg.zones.names[1001] == "POS_1"
    assert all(isinstance(k, int) for k in cfg.zones.names)


def test_advisory_warnings() -> None:
    def risky(d: dict[str, Any]) -> None:
        d["rs485"]["poll_interval_ms"] = 150
        d["http"] = {"token": "short"}
        d["acc"]["allowed_ips"] = []
        d["mqtt"]["username"] = "only-user"

    warnings = build(risky).warnings
    assert "[rs485].poll_interval_ms: 150 ms is below 200 ms" in warnings
    assert "[http].token: shorter than 16 characters" in warnings
    assert "[acc].allowed_ips: empty, every ACC connection will be refused" in warnings
    assert "[mqtt]: username and password are used only when both are set" in warnings
    long_token = build(lambda d: d.update(http={"token": "x" * 16})).warnings
    assert not any(w.startswith("[http].token") for w in long_token)


# --- invariant: any document either loads or raises ConfigError -------------------------------

_SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_subnormal=False),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["tcp", "http", "size:5", "size:x", "daily", "POS_1", "127.0.0.1", "1:2"]),
)
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3))
_KEYS = st.sampled_from(
    [k for section in BASE.values() if isinstance(section, dict) for k in section]
    + ["enabled", "port", "bind", "rotate", "rotation", "1001", "10.0.0.1", "names", "ip_to_pos"]
)


@settings(max_examples=200, deadline=None)
@given(
    changes=st.lists(
        st.tuples(
            st.sampled_from([*BASE, "broker", "http", "egress", "analysis_log"]), _KEYS, _VALUES
        ),
        max_size=6,
    )
)
def test_any_document_loads_or_raises_config_error(
    changes: list[tuple[str, str, object]],
) -> None:
    def mutate(d: dict[str, Any]) -> None:
        for section, key, value in changes:
            table = d.setdefault(section, {})
            if isinstance(table, dict):
                table[key] = value

    problems: list[str] = []
    try:
        cfg = build(mutate)
    except ConfigError as exc:
        problems = exc.errors
    else:
        assert cfg.path == P
        return
    assert problems
    assert all(e.startswith(f"config error: {P}: ") for e in problems)
