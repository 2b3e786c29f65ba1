"""`python -m training <command>`: train, sweep, report, rotate, demo, make-probe, show-world, tiny-demo."""

import sys

COMMANDS = {
    "train": "training.train",          # one run: python -m training train --out runs/<sweep>/<run>
    "sweep": "training.sweep",          # the regularization settings: python -m training sweep --preset demo
    "report": "training.report",        # markdown table of a sweep: python -m training report runs/demo
    "rotate": "training.rotate",        # rotation control of a trained run
    "demo": "training.demo",            # the viewer first, then the demo sweep trained behind it
    "make-probe": "training.make_probe",
    "show-world": "training.show_world",
    "tiny-demo": "training.tiny_demo",  # a few-second run on generated blobs
}


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m training {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        sys.exit(2)
    module = __import__(COMMANDS[argv[0]], fromlist=["main"])
    module.main(argv[1:])


if __name__ == "__main__":
    main()
