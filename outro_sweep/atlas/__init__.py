"""The sink atlas (``python -m outro_sweep.atlas``): where a model's sinks are, layer by layer,
over the real tokens of a benchmark's real prompts, before any sweep spends compute.

One forward per prompt (``capture``), eager attention, handed over one layer at a time; each
analysis is one module whose ``add(view)`` reads a layer's tensors and whose ``result()`` is
JSON-ready: ``massive``
(Sun et al.), ``dims`` (Kang et al.), ``attention`` (Gu et al.), ``rules`` (every rule of
conf/sink), ``value_share`` (OutRo's finding (ii)), ``modality`` (text / visual / audio tokens of
video and omni models). ``store`` caches the whole atlas by
identity, ``suggest`` turns it into a sweep, ``figures`` draws it, ``tracking`` logs it to W&B.
"""
