"""`python -m training <command>`: demo."""

import sys


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"demo": "training.tiny_demo", "make-probe": "training.make_probe", "show-world": "training.show_world"}
    if not argv or argv[0] not in commands:
        print(f"usage: python -m training {{{','.join(commands)}}} [options]", file=sys.stderr)
        sys.exit(2)
    module = __import__(commands[argv[0]], fromlist=["main"])
    module.main(argv[1:])


if __name__ == "__main__":
    main()
