"""Long and weighted prompts with AUTOMATIC1111's rules, encoded into the pipeline's embeddings.

The syntax, as A1111's `prompt_parser.parse_prompt_attention` reads it: `(a:1.5)` weights `a`
by 1.5, `(a)` by 1.1, `[a]` by 1/1.1, nested brackets multiply, an unclosed bracket acts up to
the end, `\\(` `\\)` `\\[` `\\]` are literal brackets and `BREAK` starts a new chunk. A prompt
is cut into chunks of 75 tokens; each is wrapped in BOS/EOS, padded to 77 and encoded on its
own, and the chunks are concatenated along the sequence axis, so nothing after token 75 is lost
(diffusers' own encode_prompt truncates at 77). The positive and negative prompts are padded
with empty chunks to the same count, as A1111 does. Weights scale each token's hidden state,
then the chunk is rescaled to its original mean (A1111's "Original" emphasis in
`sd_hijack_clip`; a chunk whose mean is zero up to rounding, as after a layer norm without
bias, keeps the weights alone rather than divide noise by noise). On SDXL both encoders are
weighted alike and their hidden states are
concatenated as diffusers does; the pooled embeddings come from encoder 2's first chunk.

Why our own parser rather than compel: compel has its own syntax (`a++`, `.and()`, its own
weight arithmetic, no mean restoration, no BREAK) and pads long prompts its own way, so A1111
prompts would give other images than A1111's. Two A1111 details differ on purpose: its rule
that moves the words after the last comma into the next chunk when a chunk boundary falls
within 20 tokens of it is skipped (chunks cut at exactly 75 tokens), and padding uses the
tokenizer's own pad token after EOS (as diffusers does; on SD 1.x that is EOS, as in A1111).
The layer each prompt is read from is diffusers' (clip_skip acts on the positive prompt; SD 1.x
applies the final layer norm to a skipped layer, SDXL reads the penultimate layer by default),
so an unweighted prompt of up to 75 tokens gives exactly the embeddings of diffusers' own
encode_prompt; such prompts are still passed to the pipeline as plain strings.

The parsing half needs no torch, so the web tier refuses a malformed weight at submit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
# A weight past this only burns the image, and an endless nesting of brackets (1.1 ** n)
# would reach infinity; A1111 has no bound, but a weight of 10 is already far out of use.
MAX_WEIGHT = 10.0
# The layers of SDXL's second text encoder a clip_skip_2 may reach (A1111 numbering).
MAX_CLIP_SKIP_2 = 12
# A mean this small next to the values' own size is zero up to rounding.
ZERO_MEAN = 1e-4
PROMPT_FIELDS = ("prompt", "negative_prompt", "prompt_2", "negative_prompt_2")

# A1111's tokens, in its order: escapes, brackets, a ":weight)" closing, plain text, a colon.
_ATTENTION = re.compile(
    r"""
    \\\(|\\\)|\\\[|\\]|\\\\|\\|
    \(|\[|
    :\s*([+-]?[.\d]+)\s*\)|
    \)|]|
    [^\\()\[\]:]+|
    :
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_SYNTAX = re.compile(r"[()\[\]\\]|\bBREAK\b")

# One parsed part: (text, weight), or None where BREAK starts a new chunk.
Part = tuple[str, float] | None


class PromptSyntaxError(ValueError):
    """A weight that is no number or out of bounds; the message says which."""


def parse(text: str) -> list[Part]:
    """A1111's parse of a prompt into (text, weight) runs, None marking each BREAK."""
    parts: list[list[Any] | None] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for part in parts[start:]:
            if part is not None:
                part[1] *= factor

    for match in _ATTENTION.finditer(text):
        piece, weight = match.group(0), match.group(1)
        if piece.startswith("\\"):
            parts.append([piece[1:], 1.0])
        elif piece == "(":
            round_open.append(len(parts))
        elif piece == "[":
            square_open.append(len(parts))
        elif weight is not None and round_open:
            try:
                value = float(weight)
            except ValueError:
                raise PromptSyntaxError(f"The weight {weight!r} is not a number.") from None
            multiply(round_open.pop(), value)
        elif piece == ")" and round_open:
            multiply(round_open.pop(), ROUND_MULTIPLIER)
        elif piece == "]" and square_open:
            multiply(square_open.pop(), SQUARE_MULTIPLIER)
        else:
            for index, words in enumerate(_BREAK.split(piece)):
                if index:
                    parts.append(None)
                parts.append([words, 1.0])
    # Unclosed brackets act up to the end of the prompt.
    for start in round_open:
        multiply(start, ROUND_MULTIPLIER)
    for start in square_open:
        multiply(start, SQUARE_MULTIPLIER)
    merged: list[Part] = []
    for part in parts or [["", 1.0]]:
        last = merged[-1] if merged else None
        if part is not None and last is not None and last[1] == part[1]:
            merged[-1] = (last[0] + part[0], last[1])
        else:
            merged.append(None if part is None else (part[0], part[1]))
    return merged


def problem(text: str) -> str | None:
    """Why a prompt's weighting cannot be honoured (None when it can)."""
    try:
        parts = parse(text)
    except PromptSyntaxError as exc:
        return str(exc)
    for part in parts:
        if part is not None and not (math.isfinite(part[1]) and abs(part[1]) <= MAX_WEIGHT):
            return (
                f"The weight of {part[0].strip()!r} comes to {part[1]:g}; "
                f"weights must stay between {-MAX_WEIGHT:g} and {MAX_WEIGHT:g}."
            )
    return None


def has_syntax(text: str) -> bool:
    """Whether a prompt holds brackets, a backslash or BREAK (else it is read as written)."""
    return _SYNTAX.search(text) is not None


@dataclass
class _Chunk:
    tokens: list[int]
    weights: list[float]


def _chunks(pipe: Any, tokenizer: Any, text: str) -> list[_Chunk]:
    """The prompt's chunks of at most 75 tokens each, with each token's weight."""
    size = tokenizer.model_max_length - 2
    chunks: list[_Chunk] = []
    current = _Chunk([], [])

    def close() -> None:
        nonlocal current
        chunks.append(current)
        current = _Chunk([], [])

    for part in parse(text):
        if part is None:
            close()
            continue
        words, weight = part
        if hasattr(pipe, "maybe_convert_prompt"):
            # A multi-vector textual inversion stands for several tokens, as in encode_prompt.
            words = pipe.maybe_convert_prompt(words, tokenizer)
        ids = tokenizer(words, add_special_tokens=False, truncation=False, verbose=False)
        for token in ids.input_ids:
            if len(current.tokens) == size:
                close()
            current.tokens.append(token)
            current.weights.append(weight)
    if current.tokens or not chunks:
        close()
    return chunks


def _token_count(pipe: Any, tokenizer: Any, text: str) -> int:
    if hasattr(pipe, "maybe_convert_prompt"):
        text = pipe.maybe_convert_prompt(text, tokenizer)
    ids = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
    return len(ids)


@dataclass
class _Encoder:
    """One text encoder with its tokenizer, and how diffusers reads its hidden states."""

    tokenizer: Any
    model: Any
    xl: bool

    def encode(self, chunk: _Chunk, skip: int | None, device: Any) -> tuple[Any, Any]:
        """(hidden states of one chunk, weighted and mean-restored; pooled output or None)."""
        import torch  # lazy: heavy, not loaded at Django start-up

        tok = self.tokenizer
        size = tok.model_max_length - 2
        pads = size - len(chunk.tokens)
        ids = [tok.bos_token_id, *chunk.tokens, tok.eos_token_id] + [tok.pad_token_id] * pads
        weights = [1.0, *chunk.weights, 1.0] + [1.0] * pads
        input_ids = torch.tensor([ids], device=device)
        mask = None
        if getattr(self.model.config, "use_attention_mask", False):
            mask = torch.tensor([[1] * (len(chunk.tokens) + 2) + [0] * pads], device=device)
        pooled = None
        if self.xl:
            out = self.model(input_ids, output_hidden_states=True)
            if out[0].ndim == 2:
                pooled = out[0]
            # SDXL always reads from the penultimate layer, and counts a skip from there.
            hidden = out.hidden_states[-((skip or 0) + 2)]
        elif skip is None:
            hidden = self.model(input_ids, attention_mask=mask)[0]
        else:
            out = self.model(input_ids, attention_mask=mask, output_hidden_states=True)
            norm = getattr(self.model, "text_model", self.model).final_layer_norm
            hidden = norm(out.hidden_states[-(skip + 1)])
        if any(w != 1.0 for w in weights):
            scale = torch.tensor(weights, dtype=hidden.dtype, device=hidden.device)
            original_mean = hidden.mean()
            hidden = hidden * scale.reshape(1, -1, 1)
            new_mean = hidden.mean()
            # After a layer norm with no bias every token's mean is 0: there is no mean to
            # restore, and dividing rounding noise by rounding noise would give infinities.
            if new_mean.abs() > ZERO_MEAN * hidden.abs().mean():
                hidden = hidden * (original_mean / new_mean)
        return hidden, pooled


def _pad(chunks: list[_Chunk], count: int) -> list[_Chunk]:
    # A1111 pads the shorter prompt with empty chunks (BOS, EOS, padding).
    return chunks + [_Chunk([], []) for _ in range(count - len(chunks))]


def _needs_embeds(pipe: Any, call: dict[str, Any], clip_skip_2: int | None) -> bool:
    """Whether diffusers' plain-string path would read these prompts otherwise than A1111."""
    if clip_skip_2 is not None:
        return True
    tokenizers = [pipe.tokenizer, getattr(pipe, "tokenizer_2", None)]
    for name in PROMPT_FIELDS:
        text = call.get(name)
        if not text:
            continue
        if has_syntax(text):
            return True
        for tokenizer in tokenizers:
            size = tokenizer.model_max_length - 2 if tokenizer is not None else 0
            if tokenizer is not None and _token_count(pipe, tokenizer, text) > size:
                return True
    return False


def diffusers_skip(clip_skip: int | None) -> int | None:
    """diffusers' count of skipped layers for an A1111 clip_skip (as runner.diffusers_clip_skip)."""
    return None if clip_skip is None or clip_skip <= 1 else clip_skip - 1


def embedded_call(
    pipe: Any, call: dict[str, Any], clip_skip_2: int | None = None
) -> dict[str, Any]:
    """The pipeline call with its prompts replaced by A1111-weighted embeddings when needed.

    Run it inside the job's add-on context, so embedding tokens and text-encoder LoRAs act.
    `call` holds prompt, negative_prompt (None: SDXL zeroes the negative), optional prompt_2 /
    negative_prompt_2 and diffusers' clip_skip; `clip_skip_2` (A1111 numbering, SDXL only) sets
    encoder 2's layer, which otherwise follows clip_skip as in diffusers. Prompts with no
    syntax and at most 75 tokens are left as strings (diffusers reads them the same way).
    """
    import torch  # lazy: heavy, not loaded at Django start-up

    xl = getattr(pipe, "text_encoder_2", None) is not None
    if clip_skip_2 is not None:
        if not xl:
            raise ValueError("clip_skip_2 needs an SDXL model.")
        layers = pipe.text_encoder_2.config.num_hidden_layers
        if not 1 <= clip_skip_2 <= layers:
            raise ValueError(
                f"clip_skip_2 {clip_skip_2} does not fit a second text encoder with {layers} layers"
            )
    for name in PROMPT_FIELDS:
        found = problem(call.get(name) or "")
        if found:
            raise ValueError(f"{name}: {found}")
    if not _needs_embeds(pipe, call, clip_skip_2):
        return call

    device = pipe._execution_device
    skip = call.get("clip_skip")
    prompt = call["prompt"] or ""
    negative = call.get("negative_prompt")
    encoders = [_Encoder(pipe.tokenizer, pipe.text_encoder, xl)]
    texts = [prompt]
    negatives = [negative or ""]
    skips = [skip]
    if xl:
        encoders.append(_Encoder(pipe.tokenizer_2, pipe.text_encoder_2, True))
        texts.append(call.get("prompt_2") or prompt)
        negatives.append(call.get("negative_prompt_2") or negative or "")
        skips.append(skip if clip_skip_2 is None else diffusers_skip(clip_skip_2))

    positive = [_chunks(pipe, e.tokenizer, t) for e, t in zip(encoders, texts, strict=True)]
    unwanted = [_chunks(pipe, e.tokenizer, t) for e, t in zip(encoders, negatives, strict=True)]
    count = max(len(c) for c in positive + unwanted)

    def embed(all_chunks: list[list[_Chunk]], positive_side: bool) -> tuple[Any, Any]:
        per_encoder, pooled = [], None
        for encoder, chunks, layer in zip(encoders, all_chunks, skips, strict=True):
            # diffusers reads the negative prompt from the default layer, whatever clip_skip.
            hidden_and_pooled = [
                encoder.encode(c, layer if positive_side else None, device)
                for c in _pad(chunks, count)
            ]
            per_encoder.append(torch.cat([h for h, _p in hidden_and_pooled], dim=1))
            pooled = hidden_and_pooled[0][1]
        return torch.cat(per_encoder, dim=-1), pooled

    result = {k: v for k, v in call.items() if k not in PROMPT_FIELDS}
    result["prompt_embeds"], pooled = embed(positive, True)
    zero_negative = xl and negative is None and pipe.config.force_zeros_for_empty_prompt
    if zero_negative:
        result["negative_prompt_embeds"] = torch.zeros_like(result["prompt_embeds"])
        negative_pooled = torch.zeros_like(pooled)
    else:
        result["negative_prompt_embeds"], negative_pooled = embed(unwanted, False)
    if xl:
        result["pooled_prompt_embeds"] = pooled
        result["negative_pooled_prompt_embeds"] = negative_pooled
    return result


EMBED_FIELDS = (
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
)


def repeated(call: dict[str, Any], times: int) -> dict[str, Any]:
    """The call's embeddings repeated `times` along the batch (one per latent of a batch)."""
    return {
        name: call[name].repeat(times, *([1] * (call[name].ndim - 1)))
        for name in EMBED_FIELDS
        if call.get(name) is not None
    }
