"""Embedding as a Ray job: `ray job submit --working-dir . -- python jobs/embed.py --cfgs CFG --data D --out O`."""
from _entry import run

if __name__ == "__main__":
    run("embed")
