"""OpenGait's own command line on Ray: `python jobs/main.py --cfgs CFG --phase train [--log_to_file]`."""
import argparse
import sys

from _entry import ROOT  # noqa: F401  (puts the project on sys.path)


def main() -> int:
    """Map OpenGait's flags onto `ray-gait train` / `ray-gait test`."""
    parser = argparse.ArgumentParser(description="OpenGait's main.py command line, run with ray_gait on Ray.")
    parser.add_argument("--cfgs", required=True, help="config YAML")
    parser.add_argument("--phase", default="train", choices=["train", "test"], help="train or test")
    parser.add_argument("--log_to_file", action="store_true", help="also log to a file in the run folder")
    parser.add_argument("--local_rank", type=int, default=0, help="ignored (Ray Train assigns ranks)")
    parser.add_argument("--iter", type=int, default=0, help="iteration to restore (restore_hint)")
    args, rest = parser.parse_known_args()
    from ray_gait.cli import main as cli_main
    argv = [args.phase, "--cfgs", args.cfgs, *rest]
    if args.iter:
        key = "trainer_cfg" if args.phase == "train" else "evaluator_cfg"
        argv += ["--set", f"{key}.restore_hint={args.iter}"]
    if args.log_to_file and args.phase == "train":
        argv.append("--log_to_file")
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
