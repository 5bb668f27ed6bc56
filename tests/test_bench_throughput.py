"""bench/throughput.py runs end to end in a tiny mode and prints the figures it promises."""

from __future__ import annotations

import sys

import pytest

from tests.benches import ROOT, require_services, run_bench


def test_it_prints_throughput_latency_and_lone_job_figures_for_both_modes(models_dir):
    require_services()
    figures = run_bench(
        *["throughput.py", "--seconds", "1", "--clients", "2", "--lone", "3", "--on", "2"],
        env={"PICTOR_MODELS_DIR": str(models_dir)},
    )
    assert figures["bench"] == "throughput" and figures["batch_images_on"] == "2"
    for mode in ("off", "on"):
        lone = figures[mode]
        assert lone["images"] > 0 and lone["p50_s"] <= lone["p95_s"]
        # A lone job's time is its generation and the rest around it.
        assert 0 < lone["lone_generation_s"] < lone["lone_median_s"]
        assert lone["lone_rest_ms"] > 0
    assert figures["ratio"] > 0 and figures["lone_ratio"] > 0
    rest_added = figures["on"]["lone_rest_ms"] - figures["off"]["lone_rest_ms"]
    assert figures["lone_rest_added_ms"] == pytest.approx(rest_added, abs=0.11)
    # Timed in the dtype PICTOR_DTYPE resolves to for the workers: fp32 on a CPU by default.
    ceiling = figures["unet_ceiling"]
    assert ceiling["images"] == 2 and ceiling["dtype"] == "fp32"
    # The step's attention apart from the rest: the demo UNet attends at its top level.
    assert 0 < ceiling["attention_share_alone"] < 1
    assert ceiling["attention_gain"] > 0 and ceiling["rest_gain"] > 0


def test_the_unets_gain_is_timed_in_the_dtype_it_is_given(models_dir):
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from throughput import unet_ceiling

    threads = torch.get_num_threads()
    try:  # it sets the bench worker's threads, for this whole process
        figures = unet_ceiling(models_dir / "demo-sd15", 2, "bf16", repeats=1)
    finally:
        torch.set_num_threads(threads)
    assert figures["dtype"] == "bf16" and figures["gain"] > 0


def test_the_lone_job_ratio_is_the_median_of_each_turns_ratio():
    sys.path.insert(0, str(ROOT / "bench"))
    from throughput import paired_ratio

    # A host that slows down between turns: each turn's pair still compares like with like.
    assert paired_ratio([1.1, 2.2, 3.0], [1.0, 2.0, 3.0]) == 1.1
