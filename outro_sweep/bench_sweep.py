"""``python -m outro_sweep.bench_sweep``: a grouped sweep against its cells one by one
(outro_sweep/bench/sweep.py)."""

from outro_sweep.bench.sweep import main

if __name__ == "__main__":
    main()
