"""``--gpu-type A,B`` and ``kubernetes.gpu-type`` lists, and ``pricing.gpu-hour`` as a table
keyed by GPU type (a plain number stays valid)."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from jupyter_elastic.config import MAX_GPU_TYPES, Pricing, load_settings, parse_gpu_types
from jupyter_elastic.controlplane.metering import price_row
from jupyter_elastic.errors import ConfigError
from jupyter_elastic.kernel.magics import _parse_options
from jupyter_elastic.models import HistoryRow, utcnow_iso


def test_gpu_type_lists_parse_in_order_and_bad_ones_are_one_line():
    assert parse_gpu_types("NVIDIA-H100-80GB-HBM3, NVIDIA-A100-SXM4-80GB") == (
        "NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB")
    assert parse_gpu_types(["a", "b"]) == ("a", "b") and parse_gpu_types(None) == ()
    for bad, why in [("A,,B", "must be a GPU type"), ("A,A", "twice"), ("A B", "must be a GPU type"),
                     (",".join(f"T{i}" for i in range(MAX_GPU_TYPES + 1)), "at most 8"),
                     ("x" * 100_000, "far too long"), ("-A", "must be a GPU type"), (3, "must be")]:
        with pytest.raises(ConfigError, match=why) as info:
            parse_gpu_types(bad)
        assert len(info.value.message) < 300 and "\n" not in info.value.message
    options, _, _ = _parse_options("--gpu-type 'NVIDIA-H100, NVIDIA-A100'")
    assert options.gpu_type == "NVIDIA-H100,NVIDIA-A100"
    with pytest.raises(UsageError, match="--gpu-type must be a GPU type"):
        _parse_options("--gpu-type 'H100;rm'")
    settings = load_settings({"kubernetes": {"gpu-type": "NVIDIA-H100,NVIDIA-A100"}})
    assert settings.kubernetes.gpu_types == ("NVIDIA-H100", "NVIDIA-A100")
    with pytest.raises(ConfigError, match="jupyter-elastic.kubernetes.gpu-type"):
        load_settings({"kubernetes": {"gpu-type": {"a": 1}}})


def test_gpu_hour_is_a_number_or_a_table_keyed_by_type():
    assert load_settings({"pricing": {"gpu-hour": 2}}).pricing == Pricing(gpu_hour=2.0)
    pricing = load_settings({"pricing": {"gpu-hour": {"NVIDIA_H100": 4, "NVIDIA-A100": "1.5",
                                                      "default": 3}}}).pricing
    assert pricing.gpu_price("NVIDIA_H100") == 4.0  # keys kept as written (no _ -> -)
    assert pricing.gpu_price("NVIDIA-A100") == 1.5
    assert pricing.gpu_price("NVIDIA-L4") == pricing.gpu_price(None) == 3.0
    assert load_settings({"pricing": {"gpu-hour": {"T4": 1}}}).pricing.gpu_hour == 2.5
    for bad in ({"T4": -1}, {"T4": "cheap"}, {"bad key!": 1}, {f"T{i}": 1 for i in range(65)}):
        with pytest.raises(ConfigError, match="pricing.gpu-hour"):
            load_settings({"pricing": {"gpu-hour": bad}})
    row = HistoryRow.from_json({"id": "c", "cell": 1, "started": utcnow_iso(), "backend": "kubernetes",
                                "cluster_id": None, "worker": None, "device": "gpu", "seconds": 1800.0,
                                "compute_seconds": 1800.0, "gpus": 2.0, "status": "ok",
                                "gpu_type": "NVIDIA-A100"})
    assert price_row(pricing, row).cost == pytest.approx(1.5)  # 1 GPU-hour of A100
    with pytest.raises(ConfigError, match="gpu_type"):
        HistoryRow.from_json({**row.to_json(), "gpu_type": "x" * 65})
