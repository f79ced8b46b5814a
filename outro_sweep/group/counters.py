"""How much work this process did and reused, for the group's tests and logs.

Keys: ``model_loads``, ``clip_decodes`` (PyAV decodes), ``clip_reads`` (frame-cache file reads),
``clip_reuses`` (served from memory), ``batch_reuses`` (model batches, processor outputs included,
served from memory), ``tower_runs`` / ``tower_reuses`` (vision or audio tower
forwards computed / served from memory), ``prefill_records`` / ``prefill_replays`` (prefills whose
leading layers were stored / replayed from another cell's), ``prefix_layers_replayed`` (decoder layers not run),
and for decode steps ``decode_records`` / ``decode_steps_replayed`` / ``decode_layers_replayed``, ``head_replays``
(output-head calls answered from a kept forward that replayed every layer), and under ``group.verify``
``verified_prefills`` / ``verified_layers`` / ``verified_decode_steps`` (forwards and layers run and compared with
what the replay would have given, instead of replayed).
Each Hydra job writes the cumulative counts to ``<job dir>/sharing.json`` when its cell ends.
"""

from __future__ import annotations

from collections import Counter

COUNTS: Counter = Counter()
SHARING_FILE = "sharing.json"
