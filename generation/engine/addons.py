"""Per-job add-ons on a shared pipeline: LoRAs, textual-inversion embeddings and tomesd.

Each of these changes modules that the cached pipeline shares with every later job, so they
are applied in a context manager that always takes them off again, even when the job fails:
a job after a LoRA job must give the same pixels as one before it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from generation.engine.request import ModelRef

LORA_FILE = "pytorch_lora_weights.safetensors"
EMBEDDING_FILE = "learned_embeds.safetensors"
# tomesd's documented default: merge half of the tokens in the patched attention blocks.
TOMESD_RATIO = 0.5


def weight_file(ref: ModelRef, preferred: str) -> tuple[str, str]:
    """(folder, file name) of an add-on's weights: a file itself, or the one inside a folder."""
    if os.path.isfile(ref.path):
        return os.path.dirname(ref.path), os.path.basename(ref.path)
    if os.path.isfile(os.path.join(ref.path, preferred)):
        return ref.path, preferred
    candidates = sorted(n for n in os.listdir(ref.path) if n.endswith(".safetensors"))
    if len(candidates) != 1:
        raise ValueError(f"{ref.model_id}: expected one .safetensors file in {ref.path}")
    return ref.path, candidates[0]


def embedding_token(model_id: str) -> str:
    """The prompt token an embedding is loaded under: its model id, as A1111 uses file names."""
    return model_id


@contextmanager
def loras_applied(pipe: Any, loras: Sequence[tuple[ModelRef, float]]) -> Iterator[None]:
    """Load the LoRAs as named adapters with their weights; unload them all afterwards."""
    if not loras:
        yield
        return
    names = []
    try:
        for index, (ref, _weight) in enumerate(loras):
            folder, name = weight_file(ref, LORA_FILE)
            adapter = f"pictor_{index}"
            pipe.load_lora_weights(folder, weight_name=name, adapter_name=adapter)
            names.append(adapter)
        pipe.set_adapters(names, adapter_weights=[weight for _ref, weight in loras])
        yield
    finally:
        if names:
            pipe.unload_lora_weights()


@contextmanager
def embeddings_applied(pipe: Any, embeddings: Sequence[ModelRef]) -> Iterator[None]:
    """Load textual inversions under their tokens; remove tokens and vectors afterwards."""
    if not embeddings:
        yield
        return
    if getattr(pipe, "text_encoder_2", None) is not None:
        raise ValueError("Textual-inversion embeddings are supported on SD 1.x and 2.x models.")
    # A multi-vector embedding adds token, token_1, token_2, ...: unload whatever was added.
    before = set(pipe.tokenizer.get_added_vocab())
    try:
        for ref in embeddings:
            folder, name = weight_file(ref, EMBEDDING_FILE)
            token = embedding_token(ref.model_id)
            pipe.load_textual_inversion(
                os.path.join(folder, name), token=token, local_files_only=True
            )
        yield
    finally:
        added = [t for t in pipe.tokenizer.get_added_vocab() if t not in before]
        if added:
            pipe.unload_textual_inversion(tokens=added)


@contextmanager
def tomesd_applied(pipe: Any, enabled: bool) -> Iterator[None]:
    """Token merging on the UNet's attention blocks for this job only."""
    if not enabled:
        yield
        return
    import tomesd  # lazy: heavy, not loaded at Django start-up

    # max_downsample=2 covers the first two UNet levels: tomesd's default (1) patches the top
    # level only, which on SD is where attention is most expensive and on the demo is where it sits.
    tomesd.apply_patch(pipe, ratio=TOMESD_RATIO, max_downsample=2)
    try:
        yield
    finally:
        tomesd.remove_patch(pipe)


@contextmanager
def applied(
    pipe: Any,
    *,
    loras: Sequence[tuple[ModelRef, float]] = (),
    embeddings: Sequence[ModelRef] = (),
    tomesd: bool = False,
) -> Iterator[None]:
    """Every per-job add-on at once, taken off in reverse order."""
    with ExitStack() as stack:
        stack.enter_context(loras_applied(pipe, loras))
        stack.enter_context(embeddings_applied(pipe, embeddings))
        stack.enter_context(tomesd_applied(pipe, tomesd))
        yield
