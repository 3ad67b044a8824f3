"""Entrypoint for `ray job submit`: label a corpus with a run's trained SLM.

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- python jobs/predict.py --model runs/mr --input new.jsonl --output preds

Arguments are the same as `freeal-ray predict`; the job runs on the cluster it was submitted to.
"""

import sys

from freeal_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
