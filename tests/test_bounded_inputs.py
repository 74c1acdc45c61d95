"""Every parser of user input, driven by Hypothesis: valid input round-trips, any other input
is one short ``ConfigError``/``UsageError`` (never another exception), and no call is slow.

"Any other input" includes 100 KB strings, unicode, 5000-digit integers, lists nested
100000 deep and random nested junk. Each call's CPU time (``time.thread_time``, which other
processes on a busy machine do not inflate) is measured in the test's own loop and must
stay under ``CALL_BOUND`` (issue 9 asks for this bound: a quadratic regex once took 11 s on
a 12000-character duration); a call over the bound is measured once more before the test
fails, so one garbage-collector pause cannot fail it.
"""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from jupyter_elastic import config as cfg
from jupyter_elastic.config import ConfigError
from jupyter_elastic.controlplane.metering import price_row
from jupyter_elastic.kernel import magics
from jupyter_elastic.models import MAX_NUMBER, HistoryRow, check_cluster_name

#: Longest a call on any input may take, in CPU seconds of this thread.
CALL_BOUND = 0.05
#: Longest error message.
MESSAGE_CHARS = 300

PROPERTY = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def _deep(depth: int) -> list:
    top: list = []
    inner = top
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return top


#: Inputs Hypothesis rarely builds on its own: each one broke a parser once.
HOSTILE = [
    "9" * 12000 + "!",  # the quadratic-backtracking duration of issue 9 (11 s before)
    "1" * 100_000 + "s",
    "1." + "0" * 100_000,
    " " * 100_000 + "5",
    "é" * 100_000,
    "\x00" * 100_000,
    "𝟗" * 50_000,  # digits outside ASCII
    ",".join(["x"] * 50_000),
    "--gpus " * 15_000,
    10**5000,  # repr() of it is a ValueError in Python >= 3.11
    -(10**5000),
    float("inf"),
    float("nan"),
    1e308,
    _deep(100_000),  # repr() and str() of it are RecursionErrors
    {"a": _deep(10_000)},
    b"90s",
    object(),
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=80)
    | st.sampled_from(["90s", "2m", "16GiB", "0.5", "1e3", "-1", "inf", "nan", "1e400", ""])
)
junk = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
anything = junk | st.sampled_from(HOSTILE)


def timed(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` -> (result or None, exception or None), with the call's CPU
    time checked against CALL_BOUND (measured again once if over it)."""
    for _attempt in range(2):
        started = time.thread_time()
        try:
            result, error = fn(*args, **kwargs), None
        except Exception as exc:
            result, error = None, exc
        spent = time.thread_time() - started
        if spent < CALL_BOUND:
            return result, error
    pytest.fail(f"{fn.__name__}({cfg.quote(args)}) took {spent * 1000:.0f} ms of CPU (bound {CALL_BOUND * 1000:.0f} ms)")


def refused_or_parsed(fn, value, *args, errors=(ConfigError,), **kwargs):
    """The property every parser has: a result, or one short error of ``errors``."""
    result, error = timed(fn, value, *args, **kwargs)
    if error is None:
        return result
    if not isinstance(error, errors):
        raise AssertionError(f"{fn.__name__}({cfg.quote(value)}) raised {type(error).__name__}") from error
    message = error.message if isinstance(error, ConfigError) else str(error)
    assert "\n" not in message
    assert len(message) < MESSAGE_CHARS, message[:400]
    if isinstance(value, str) and len(value) > 100:
        assert value[:100] not in message  # at most a short prefix is quoted back
    return None


# ---------------------------------------------------------------------------- value parsers
PARSERS = [
    (cfg.parse_duration, ()),
    (cfg.parse_size, ()),
    (cfg.parse_gpus, ()),
    (cfg.whole, ("n",)),
    (cfg.non_negative, ("price",)),
    (cfg.short_text, ("name",)),
    (cfg.check_backend, ()),
    (check_cluster_name, ()),
]


@pytest.mark.parametrize("parser, args", PARSERS, ids=[p.__name__ for p, _ in PARSERS])
@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_values_are_one_short_error(parser, args, value):
    refused_or_parsed(parser, value, *args)


@pytest.mark.parametrize("parser, args", PARSERS, ids=[p.__name__ for p, _ in PARSERS])
@PROPERTY
@given(value=junk)
def test_any_value_parses_or_is_one_short_error(parser, args, value):
    refused_or_parsed(parser, value, *args)


def test_the_12000_digit_duration_is_refused_at_once():
    """Issue 9: this took 11 s when the duration regex backtracked quadratically."""
    _, error = timed(cfg.parse_duration, "9" * 12000 + "!")
    assert isinstance(error, ConfigError) and "12001 characters, which is far too long" in error.message
    # The same shape within the length bound is refused by the pattern, just as fast.
    _, error = timed(cfg.parse_duration, "9" * 60 + "!")
    assert isinstance(error, ConfigError) and "'99999" in error.message


def test_quote_is_total_and_short():
    for value in HOSTILE:
        text, error = timed(cfg.quote, value)
        assert error is None and len(text) <= cfg.QUOTE_CHARS + 30, text
    assert cfg.quote(10**5000).startswith("<an integer of about 5001 digits")
    assert cfg.quote("abc") == "'abc'"


@PROPERTY
@given(st.text(max_size=cfg.QUOTE_CHARS - 2))
def test_quote_of_a_short_string_is_its_repr(text):
    if len(repr(text)) <= cfg.QUOTE_CHARS:
        assert cfg.quote(text) == repr(text)


units = st.sampled_from(sorted(cfg._DURATION_UNITS.items()))


@PROPERTY
@given(number=st.integers(0, 10**6), unit=units, spaces=st.sampled_from(["", " "]))
def test_durations_round_trip(number, unit, spaces):
    name, factor = unit
    assert cfg.parse_duration(f"{number}{spaces}{name}") == pytest.approx(number * factor)
    assert cfg.parse_duration(number * factor) == pytest.approx(number * factor)


@PROPERTY
@given(number=st.integers(1, 10**6), unit=st.sampled_from(sorted(cfg._SIZE_UNITS.items())))
def test_sizes_round_trip(number, unit):
    name, factor = unit
    assert cfg.parse_size(f"{number}{name}") == number * factor


@PROPERTY
@given(gpus=st.integers(0, cfg.MAX_GPUS) | st.floats(0, 1, exclude_max=True))
def test_gpu_counts_round_trip(gpus):
    assert cfg.parse_gpus(gpus) == gpus
    assert cfg.parse_gpus(repr(float(gpus))) == float(gpus)


@PROPERTY
@given(n=st.integers(0, 10**18), minimum=st.integers(0, 5))
def test_whole_numbers_round_trip(n, minimum):
    if n >= minimum:
        assert cfg.whole(n, "n", minimum=minimum) == n
        assert cfg.whole(f" {n} ", "n", minimum=minimum) == n
    else:
        with pytest.raises(ConfigError, match=f">= {minimum}"):
            cfg.whole(n, "n", minimum=minimum)


@PROPERTY
@given(x=st.floats(0, 1e15))
def test_non_negative_round_trips(x):
    assert cfg.non_negative(x, "x") == x
    assert cfg.non_negative(repr(x), "x") == x


@PROPERTY
@given(text=st.text(min_size=1, max_size=200))
def test_short_text_round_trips(text):
    assert cfg.short_text(text, "t") == text


@PROPERTY
@given(name=st.from_regex(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True))
def test_cluster_names_round_trip(name):
    assert check_cluster_name(name) == name


# ---------------------------------------------------------------------------- load_settings
SECTIONS = {
    "worker": ["gpus", "cpus", "memory"],
    "pricing": ["gpu-hour", "cpu-hour", "currency"],
    "kubernetes": ["namespace", "image", "node-selector", "tolerations", "env", "labels",
                   "scheduler-service-type", "pending-timeout", "gpu-resource"],
    "gateway": ["address", "auth", "cluster-options", "connect-timeout", "password"],
}
TOP = ["backend", "idle-timeout", "shutdown-after", "lease-ttl", "min-workers", "max-workers",
       "interrupt-grace"]
settings_dicts = st.fixed_dictionaries(
    {},
    optional={
        **{key: anything for key in TOP},
        **{name: st.fixed_dictionaries({}, optional={k: anything for k in keys}) | anything
           for name, keys in SECTIONS.items()},
    },
)


@PROPERTY
@given(raw=settings_dicts | anything)
def test_load_settings_takes_any_mapping(raw):
    refused_or_parsed(cfg.load_settings, raw)


@PROPERTY
@given(
    idle=st.integers(0, 10**6), workers=st.integers(1, 1000), cpus=st.integers(1, 512),
    gpus=st.integers(0, cfg.MAX_GPUS), price=st.floats(0, cfg.MAX_PRICE),
    currency=st.text(min_size=1, max_size=8), image=st.text(min_size=1, max_size=100),
    labels=st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=20), max_size=3),
)
def test_valid_settings_round_trip(idle, workers, cpus, gpus, price, currency, image, labels):
    raw = {"idle-timeout": f"{idle}s", "max-workers": workers, "worker": {"cpus": cpus, "gpus": gpus},
           "pricing": {"gpu-hour": price, "currency": currency},
           "kubernetes": {"image": image, "labels": labels}}
    if image == "null":
        return
    got = cfg.load_settings(raw)
    assert (got.idle_timeout, got.max_workers, got.worker.cpus, got.worker.gpus) == (idle, workers, cpus, gpus)
    assert (got.pricing.gpu_hour, got.pricing.currency, got.kubernetes.image) == (price, currency, image)
    assert got.kubernetes.labels == labels


def test_non_mapping_sections_are_config_errors():
    for raw in ({"worker": [1]}, {"gateway": "x"}, {"kubernetes": {"env": [1]}}, [1], "x",
                {"kubernetes": {"image": {"a": 1}}}, {"gateway": {"auth": ["simple"]}}):
        with pytest.raises(ConfigError):
            cfg.load_settings(raw)


def test_prices_are_bounded_so_totals_stay_finite():
    with pytest.raises(ConfigError, match="pricing.gpu-hour must be at most"):
        cfg.load_settings({"pricing": {"gpu-hour": 1e300}})
    # prices also arrive from traitlets, past load_settings
    with pytest.raises(ConfigError, match="pricing.gpu-hour"):
        cfg.Pricing(gpu_hour=float("inf"))
    with pytest.raises(ConfigError, match="pricing.cpu-hour must be at most"):
        cfg.Pricing(cpu_hour=1e300)


# ---------------------------------------------------------------------------- history rows
def _row(**changes):
    row = {"id": "cell-1", "cell": 3, "started": "2026-11-29T05:01:02+00:00", "backend": "local",
           "cluster_id": "abc", "worker": "tcp://127.0.0.1:1", "device": "gpu", "seconds": 2.5,
           "compute_seconds": 2.0, "gpus": 1.0, "status": "ok"}
    row.update(changes)
    return row


numbers = st.floats(0, MAX_NUMBER) | st.integers(0, int(MAX_NUMBER))
valid_rows = st.builds(
    _row,
    id=st.text(max_size=64), cell=st.none() | st.integers(0, 2**31 - 1),
    device=st.sampled_from(["gpu", "cpu", "local"]), status=st.sampled_from(["ok", "error", "cancelled", "timeout"]),
    seconds=numbers, compute_seconds=numbers, gpus=numbers, cpus=numbers,
    source=st.text(max_size=300), error=st.none() | st.text(max_size=1200), owner=st.text(max_size=200),
    cached_inputs=st.lists(st.text(max_size=20), max_size=5),
)


@PROPERTY
@given(row=valid_rows)
def test_valid_history_rows_round_trip(row):
    parsed = HistoryRow.from_json(row)
    assert parsed.id == row["id"] and parsed.cell == row["cell"] and parsed.status == row["status"]
    assert parsed.seconds == float(row["seconds"]) and parsed.cached_inputs == row["cached_inputs"]
    assert len(parsed.source) <= 200 and (parsed.error is None or len(parsed.error) <= 1000)
    again = HistoryRow.from_json(parsed.to_json())
    assert again.to_json() == parsed.to_json()


@PROPERTY
@given(row=valid_rows, price=st.floats(0, cfg.MAX_PRICE))
def test_priced_rows_are_finite_and_read_back(row, price):
    pricing = cfg.Pricing(gpu_hour=price, cpu_hour=price)
    priced = price_row(pricing, HistoryRow.from_json(row))
    for value in (priced.gpu_seconds, priced.cpu_seconds, priced.cost):
        assert math.isfinite(value) and 0 <= value <= MAX_NUMBER
    HistoryRow.from_json(priced.to_json())  # what a kernel reads back from GET /history


row_fields = list(HistoryRow.__dataclass_fields__)


@PROPERTY
@given(row=valid_rows, field=st.sampled_from(row_fields), value=anything)
def test_any_history_row_is_parsed_or_one_short_error(row, field, value):
    refused_or_parsed(HistoryRow.from_json, {**row, field: value})


@PROPERTY
@given(row=anything)
def test_history_row_from_junk(row):
    refused_or_parsed(HistoryRow.from_json, row)


# ---------------------------------------------------------------------------- %%gpu flags
def _parse(line):
    try:
        return magics._parse_options(line)
    except magics._HelpShown:
        return None


flag_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
flag_lines = st.lists(
    st.sampled_from(["--gpus", "--cpus", "--memory", "--in", "--out", "--timeout", "--retries",
                     "--backend", "--gpu-type", "--local", "--require-gpu", "--keep-on-device", "-x"])
    | flag_values,
    max_size=8,
).map(" ".join)


@PROPERTY
@given(line=flag_lines | st.text(max_size=200) | st.sampled_from([v for v in HOSTILE if isinstance(v, str)]))
def test_any_flags_line_is_parsed_or_one_usage_error(line):
    refused_or_parsed(_parse, line, errors=(UsageError,))


@PROPERTY
@given(
    gpus=st.sampled_from(["0.5", "1", "2"]), timeout=st.integers(1, 3600), retries=st.integers(0, 5),
    inputs=st.lists(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), min_size=1, max_size=4),
)
def test_valid_flags_round_trip(gpus, timeout, retries, inputs):
    line = f"--gpus {gpus} --timeout {timeout}s --retries {retries} --in {','.join(inputs)} --out y"
    options, got_in, got_out = magics._parse_options(line)
    assert (options.gpus, options.timeout, options.retries) == (float(gpus), timeout, retries)
    assert got_in == inputs and got_out == ["y"]


@PROPERTY
@given(value=st.text(max_size=200) | st.sampled_from([v for v in HOSTILE if isinstance(v, str)]))
def test_any_names_list_is_parsed_or_one_usage_error(value):
    names = refused_or_parsed(magics._names, value, "--in", errors=(UsageError,))
    if names is not None:
        assert all(n.isidentifier() for n in names) and names == [
            n.strip() for n in value.split(",") if n.strip()
        ]


def test_long_flag_lines_are_refused_before_splitting():
    with pytest.raises(UsageError, match="at most 4096"):
        magics._parse_options("--in " + ",".join(["x"] * 50_000))
    with pytest.raises(UsageError) as info:
        magics._parse_options("--in " + "1" * 4000)
    assert len(str(info.value)) < MESSAGE_CHARS
