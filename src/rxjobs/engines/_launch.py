"""Start a job driver quickly: detach first, import the engine after.

``python -m rxjobs.engines._launch MODULE JOB_ID --share-dir ...`` double-forks
and reports ``pid create_time`` to the submitter before importing the engine
module (and with it cloudpickle, the job store, a JVM bridge...), so that a
non-waiting ``rx_exec`` returns as soon as the driver exists.  Then it runs
``MODULE.main(argv, detached=True)``.  The job id stays on the command line.
"""

from __future__ import annotations

import importlib
import sys


def main() -> int:
    module, argv = sys.argv[1], sys.argv[2:]
    if not module.startswith("rxjobs.engines."):
        raise SystemExit(f"not an rxjobs engine module: {module}")
    from .drivers import detach

    detach(log_fd=2)  # stderr is already the driver log
    return importlib.import_module(module).main(argv, detached=True)


if __name__ == "__main__":
    sys.exit(main())
