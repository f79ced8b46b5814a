"""``python -m outro_sweep.fit``: train LSG's layer-wise sink gates with the backbone frozen."""
