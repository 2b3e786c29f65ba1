"""`python -m viewer runs/` (or `tuneline-view runs/`): serve every run below a folder or URL.

Like `tensorboard --logdir`: runs are found below the folder (any `record.zarr`),
new ones as they appear; the page polls for new checkpoints of live runs. The root
may be a URL the run store opens (`s3://bucket/sweep`, `gs://...`), with endpoint and
credentials from the usual environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...).
With `TUNELINE_STUDIES=<database>` it serves human studies too, and every page but the
participants' needs the researcher's token: the link printed at start sets it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m viewer", description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="runs",
                        help="folder or URL (s3://bucket/prefix) to search for runs (default: runs)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1, this "
                        "machine only; 0.0.0.0 exposes the runs to the network)")
    parser.add_argument("--port", type=int, default=8050, help="port (default: 8050)")
    parser.add_argument("--debug", action="store_true", help="Dash debug mode (reloader, dev tools)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port} is not a valid port")
    from recorder.store import RunStore
    from viewer.data import is_url

    if is_url(args.root):
        root = args.root
        try:
            RunStore.find(root)  # an unknown scheme or a missing backend fails now, not on the page
        except (ValueError, ImportError) as exc:
            parser.error(str(exc))
        except OSError as exc:  # e.g. a bucket not there yet: the page says so and looks again
            print(f"tuneline viewer: cannot search '{root}' yet: {exc}", file=sys.stderr, flush=True)
        shown = root
    else:
        root = Path(args.root)
        if root.exists() and not root.is_dir():
            parser.error(f"'{root}' is not a folder")
        shown = root.resolve()
    from viewer.app import create_app  # after argument checks: importing Dash takes a moment

    app = create_app(root)
    print(f"tuneline viewer: serving runs below '{shown}' at http://{args.host}:{args.port}/",
          file=sys.stderr, flush=True)
    server = getattr(app, "server", None)
    studies = server.config.get("TUNELINE_STUDY_DB") if server is not None else None
    if studies is not None:  # participants are served: every other page needs the researcher's token
        print(f"tuneline viewer: studies on; researcher link (open once per browser): "
              f"http://{args.host}:{args.port}/?token={studies.researcher_token}; studies page: "
              f"http://{args.host}:{args.port}/study/", file=sys.stderr, flush=True)
    app.run(host=args.host, port=args.port, debug=args.debug)


if __name__ == "__main__":
    main()
