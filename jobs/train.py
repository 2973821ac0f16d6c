"""Training as a Ray job: `ray job submit --working-dir . -- python jobs/train.py --cfgs CFG`."""
from _entry import run

if __name__ == "__main__":
    run("train")
