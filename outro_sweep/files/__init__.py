"""Writing files safely, the lowest layer: atomic writes (``atomic``), content fingerprints
(``fingerprint``) and credentials masked in everything written (``masking``, ``masked_output``)."""
