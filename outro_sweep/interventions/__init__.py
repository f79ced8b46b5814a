"""Inference-time interventions on a decoder's attention. One intervention is one ``.py`` here plus
one config group (``conf/outro/`` for OutRo): an ``Intervention`` that builds an ``Editor``, both
in ``base.py``, whose docstring is the whole contract; ``decoder.py`` finds a model's decoder
layers and attention modules."""
