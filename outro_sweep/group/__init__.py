"""Work shared by the cells of one group, in one process.

A group is the cells of a sweep that share model, benchmark and media sampling and differ only
in intervention settings (``outro_sweep.group.key.group_key``: the identity of their common
baseline). The launchers run a group's cells one after another in one process
(``hydra.launcher.cells_per_task``); whatever those cells would each compute identically is
computed once here and reused by the next cell, under ``group.share`` (conf/config.yaml):

- ``models``: the model is loaded once (interventions attach and detach around each cell);
- ``clips``: each clip is decoded (or read from the frame cache) once, then kept in memory;
- ``towers``: each clip's vision/audio tower output is computed once (no intervention edits the
  towers; LSG's V-sink probe reads their output, which a cached call passes to its hooks);
- ``prefix``: each batch's prefill runs the decoder layers below the first layer any cell can
  change once; later cells replay them (output and KV-cache writes) and continue from there.
  What a cell's editors answer about their layers is the protocol of ``replayable``;
  ``verify`` runs a cell's first batches without replay and compares (``prefix``).

Every cache keys on the exact input tensors, so a cell never reuses work computed from other
inputs; ``counters.COUNTS`` counts the work done and reused. A kept model is checked to be the
stock model before the next cell gets it (``models.check_stock``).
"""
