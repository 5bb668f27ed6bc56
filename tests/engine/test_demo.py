"""The demo model: built atomically and idempotently, loaded like a real checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from generation.engine import demo
from generation.engine.loader import load_pipeline


def test_it_builds_once_and_loads_through_the_loader(tmp_path: Path) -> None:
    target = tmp_path / "demo-sd15"

    assert demo.build_demo_sd15(str(target)) is True
    assert demo.build_demo_sd15(str(target)) is False

    assert [p.name for p in tmp_path.iterdir()] == ["demo-sd15"]  # no staging leftovers
    assert sorted(p.parent.name for p in target.rglob("*.safetensors")) == [
        "text_encoder",
        "unet",
        "vae",
    ]
    assert not list(target.rglob("*.bin"))
    pipe = load_pipeline(str(target))
    assert pipe.vae_scale_factor == 8
    assert pipe.tokenizer.model_max_length == 77
    # Cross-attention at the top UNet level, where attention patches such as tomesd act.
    assert pipe.unet.down_blocks[0].attentions


def test_it_leaves_nothing_behind_when_a_build_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_build(scratch: str) -> None:
        Path(scratch).mkdir(parents=True)
        (Path(scratch) / "half-written").write_text("x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "_build_pipeline", broken_build)

    with pytest.raises(RuntimeError, match="disk full"):
        demo.build_demo_sd15(str(tmp_path / "demo-sd15"))

    assert list(tmp_path.iterdir()) == []
