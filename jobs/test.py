"""Evaluation as a Ray job: `ray job submit --working-dir . -- python jobs/test.py --cfgs CFG`."""
from _entry import run

if __name__ == "__main__":
    run("test")
