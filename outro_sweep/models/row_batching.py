"""One left-padded batch from one processor call per row, for processors that cannot batch
clips of different frame counts (Qwen3-VL and VideoLLaMA3 with per-clip pixel budgets,
InternVL, LLaVA-OneVision, LLaVA-NeXT-Video)."""

from __future__ import annotations

from outro_sweep.media.decode import DecodedVideo

# 2-D (batch, sequence) tensors of a processor batch, and the value that pads each on the left.
TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


def merge_rows(rows: list[dict], pad_token_id: int, join=None) -> dict:
    """One left-padded batch from processor outputs of one row each (same keys in every row).

    Token tensors are left-padded to the longest row (``input_ids`` with ``pad_token_id``, the
    masks with 0, exactly as the tokenizer pads); every other value is per clip and joined in
    row order by ``join(key, values)`` (default: ``torch.cat`` along dim 0, right for flat
    patch lists, grids, per-clip scalars and per-frame pixel stacks).
    """
    import torch
    import torch.nn.functional as F

    keys = list(rows[0])
    for row in rows[1:]:
        if list(row) != keys:
            raise ValueError(f"processor rows disagree on their keys: {keys} vs {list(row)}")
    length = max(int(row["input_ids"].shape[1]) for row in rows)
    merged = {}
    for key in keys:
        values = [row[key] for row in rows]
        if key in TOKEN_KEYS:
            pad = pad_token_id if key == "input_ids" else 0
            merged[key] = torch.cat([F.pad(v, (length - v.shape[1], 0), value=pad) for v in values], dim=0)
        elif join is not None:
            merged[key] = join(key, values)
        else:
            merged[key] = torch.cat(values, dim=0)
    return merged


def encode_by_row(processor, texts: list[str], clips: list[DecodedVideo], encode, join=None,
                  split: bool | None = None) -> dict:
    """``encode(texts, clips)`` (one processor call) when the clips share one frame count;
    otherwise (or with ``split=True``) one call per row, merged by ``merge_rows``."""
    if split is None:
        split = len({clip.num_frames for clip in clips}) > 1
    if not split or len(clips) == 1:
        return encode(texts, clips)
    rows = [encode([text], [clip]) for text, clip in zip(texts, clips)]
    return merge_rows(rows, processor.tokenizer.pad_token_id, join)
