"""Search as a Ray job (no Ray needed): `ray job submit --working-dir . -- python jobs/search.py --gallery G --probe P`."""
from _entry import run

if __name__ == "__main__":
    run("search")
