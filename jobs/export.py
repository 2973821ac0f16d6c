"""Export of the embedding network as a Ray job: `ray job submit --working-dir . -- python jobs/export.py --cfgs CFG
--checkpoint CKPT --format onnx --out FILE`."""
from _entry import run

if __name__ == "__main__":
    run("export")
