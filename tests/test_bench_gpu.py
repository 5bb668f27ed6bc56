"""bench/gpu.py in its reduced CPU mode: it runs end to end and prints the figures it promises."""

from __future__ import annotations

from tests.benches import run_bench


def test_it_prints_one_json_line_with_direct_api_and_batched_figures(models_dir):
    figures = run_bench(
        *["gpu.py", "--cpu", "--runs", "1", "--clients", "2", "--models-dir", str(models_dir)]
    )
    assert figures["bench"] == "gpu" and figures["mode"] == "cpu-reduced"
    assert (figures["size"], figures["steps"], figures["dtype"]) == (64, 21, "fp32")
    off = figures["compile_off"]
    assert {"direct_median_s", "api_median_s", "api_overhead_s", "batched", "unbatched"} <= set(off)
    assert off["direct_median_s"] > 0 and off["api_median_s"] > 0
    assert off["batched"]["images"] == 2 and off["batched"]["max_batch_images"] == 2
    assert off["unbatched"]["max_batch_images"] == 1
    assert "compile_on" not in figures  # compile is a GPU-only measurement
