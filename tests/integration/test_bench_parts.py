"""Pure parts of `gateway bench`: raw-sample statistics, targets, the raw MQTT framing, scrapes.

(No sockets here; the file sits with the other bench tests it supports.)
"""

from __future__ import annotations

import argparse

import pytest

from gateway.tools.bench import BenchOptions
from gateway.tools.bench_gateway import Scrape, bucket_delta
from gateway.tools.bench_mqtt import (
    PUBLISH,
    _packet,
    connect_packet,
    parse_publish,
    split_packets,
    subscribe_packet,
)
from gateway.tools.bench_stats import (
    Spread,
    Summary,
    Verdict,
    bucket_quantile,
    growth_pct,
    share_at_most,
)


def test_summary_uses_nearest_rank_on_raw_samples() -> None:
    s = Summary.of(list(range(100, 0, -1)))  # 1..100, unsorted
    assert (s.n, s.p50, s.p90, s.p99, s.max) == (100, 50, 90, 99, 100)
    assert Summary.of([]) == Summary(0, 0, 0, 0, 0)


def test_spread_is_min_median_max_and_collapses_when_equal() -> None:
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(1.0, 2.0, 3.0)
    assert Spread.of([2_000_000, 1_000_000]).fmt(1_000_000) == "1.00/1.50/2.00"
    assert Spread.of([5.0]).fmt() == "5.00"


def test_verdict_passes_only_when_every_repeat_passes() -> None:
    assert Verdict("gate", "x", (True, True)).word == "PASS"
    assert Verdict("gate", "x", (True, False, False)).word == "FAIL (2/3 repeats)"
    assert not Verdict("gate", "x", ()).ok
    assert Verdict("gate", "x", ()).word == "FAIL (no samples)"


def test_growth_is_the_fitted_slope_over_the_span() -> None:
    xs = [float(t) for t in range(0, 481, 10)]
    assert growth_pct(xs, [100.0] * len(xs)) == pytest.approx(0.0)
    assert growth_pct(xs, [100.0 + t / 480 for t in xs]) == pytest.approx(1.0)


def test_histogram_bounds_and_exact_share_at_a_bucket_edge() -> None:
    buckets = [(1000.0, 90.0), (2000.0, 99.0), (5000.0, 100.0), (float("inf"), 100.0)]
    assert bucket_quantile(buckets, 0.5) == 1000.0
    assert bucket_quantile(buckets, 0.99) == 2000.0
    assert bucket_quantile(buckets, 1.0) == 5000.0
    assert share_at_most(buckets, 2000.0) == pytest.approx(0.99)
    assert share_at_most(buckets, 1500.0) is None
    assert bucket_delta(buckets, [(1000.0, 80.0), (2000.0, 85.0)])[:2] == [
        (1000.0, 10.0),
        (2000.0, 14.0),
    ]


def _publish(topic: str, payload: bytes) -> bytes:
    raw = topic.encode()
    return _packet(PUBLISH << 4, len(raw).to_bytes(2, "big") + raw + payload)


@pytest.mark.parametrize("size", [0, 10, 127, 128, 16_383, 16_384, 70_000])
def test_split_packets_whole_byte_by_byte_and_with_trailing_data(size: int) -> None:
    packet = _publish("xovis/sensor-1", bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    whole = bytearray(packet + packet[:3])
    (first, body), = split_packets(whole)  # fmt: skip
    assert parse_publish(first, body) == ("xovis/sensor-1", packet[-size:] if size else b"")
    assert bytes(whole) == packet[:3]  # the trailing partial packet stays buffered
    buf, got = bytearray(), []
    for b in packet:
        buf.append(b)
        got += split_packets(buf)
    assert got == [(first, body)]
    assert not buf


def test_qos1_publish_body_skips_the_packet_id() -> None:
    body = b"\x00\x01t" + b"\x00\x07" + b"data"
    assert parse_publish((PUBLISH << 4) | 0x02, body) == ("t", b"data")


def test_connect_and_subscribe_packets_are_mqtt_311() -> None:
    c = connect_packet("id")
    assert c[0] == 0x10
    assert c[2:10] == b"\x00\x04MQTT\x04\x02"
    s = subscribe_packet(1, ["a/#"])
    assert s == b"\x82\x08\x00\x01\x00\x03a/#\x00"


def test_scrape_parses_counters_labels_drops_and_buckets() -> None:
    text = (
        "# TYPE gateway_events_total counter\n"
        'gateway_events_total{site="b"} 42.0\n'
        "# TYPE gateway_mqtt_egress_dropped_total counter\n"
        'gateway_mqtt_egress_dropped_total{site="b",reason="queue_full"} 3.0\n'
        'gateway_mqtt_egress_dropped_total{site="b",reason="disconnected"} 0.0\n'
        "# TYPE gateway_rs485_poll_jitter_us histogram\n"
        'gateway_rs485_poll_jitter_us_bucket{site="b",le="100.0"} 1.0\n'
        'gateway_rs485_poll_jitter_us_bucket{site="b",le="+Inf"} 2.0\n'
        'gateway_rs485_poll_jitter_us_count{site="b"} 2.0\n'
        'gateway_rs485_poll_jitter_us_sum{site="b"} 150.0\n'
    )
    s = Scrape.parse(text, 7)
    assert s.value("gateway_events_total") == 42.0
    assert s.value("gateway_mqtt_egress_dropped_total") == 3.0
    assert s.value("gateway_mqtt_egress_dropped_total", reason="queue_full") == 3.0
    assert s.dropped() == {
        "gateway_mqtt_egress_dropped_total{reason=queue_full}": 3.0,
        "gateway_mqtt_egress_dropped_total{reason=disconnected}": 0.0,
    }
    assert s.buckets("gateway_rs485_poll_jitter_us") == [(100.0, 1.0), (float("inf"), 2.0)]


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = dict(
        broker=None, repeats=None, trials=None, duration=None, soak=False, pin=None,
        phases=None, json=None, quick=False,
    )  # fmt: skip
    base.update(kw)
    return argparse.Namespace(**base)


def test_options_defaults_quick_sizes_and_explicit_flags_win() -> None:
    full = BenchOptions.from_args(_args())
    assert (full.repeats, full.trials, full.duration_s, full.warmup_s, full.discard) == (
        3, 500, 60.0, 10.0, 50,
    )  # fmt: skip
    assert "soak" not in full.phases
    quick = BenchOptions.from_args(_args(quick=True, trials=7))
    assert (quick.repeats, quick.trials, quick.duration_s) == (1, 7, 5.0)
    assert BenchOptions.from_args(_args(soak=True, phases="gate")).phases == ("gate", "soak")
