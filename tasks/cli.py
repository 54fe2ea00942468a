"""How the entry scripts end on bad input: one line naming the problem, not a traceback."""
import os
import sys


def run_cli(main, prog: str):
    """Call main(); a ValueError or FileNotFoundError (bad flags, files, columns, labels, models)
    ends the program with `prog: error: message`. Set MASKSUB_HF_TRACEBACK=1 to see the traceback."""
    try:
        return main()
    except (ValueError, FileNotFoundError) as err:
        if os.environ.get("MASKSUB_HF_TRACEBACK"):
            raise
        sys.exit(f"{prog}: error: {err}")
