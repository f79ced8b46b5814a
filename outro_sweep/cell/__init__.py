"""A cell's storage and identity: what defines it (``identity``, ``baseline``, ``job_names``),
its folder, markers and lock (``store``), its W&B run (``tracking``) and the records a sweep
keeps beside its cells (``sweep_records``). The cell's story itself is ``outro_sweep.run_cell``."""
