"""Entrypoint for `ray job submit`: run (or resume) the FreeAL loop from a config file.

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- python jobs/label_corpus.py --config my.yaml

The job connects to the cluster it was submitted to (RAY_ADDRESS is set by Ray); extra arguments
are the same as `freeal-ray run`.
"""

import sys

from freeal_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
