"""``python -m outro_sweep [-m] key=value ...``: run one cell, or a sweep of cells."""

from outro_sweep.sweep.cli import main

if __name__ == "__main__":
    main()
