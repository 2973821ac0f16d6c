"""Synthetic data set as a Ray job: `ray job submit --working-dir . -- python jobs/synth.py --out DIR`."""
from _entry import run

if __name__ == "__main__":
    run("synth")
