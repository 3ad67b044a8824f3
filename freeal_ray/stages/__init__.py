"""The FreeAL loop's stages, one unit per step of the data flow, in the order loop.py runs them:

round 0:  ingest -> synthesize (demo pool) -> annotate-0 (every row, LLM)   [or given labels]
round r:  train (SLM) -> score (loss, GMM clean split) -> select (next demos) -> refine (LLM, noisy rows)
          [-> expand (incremental mode: a fresh share of rows)]
final:    finalize (labels, the SLM checkpoint, the report)

Every table carries the row's text and pass-through columns along, so no stage needs a join:
round r's labels are its clean rows as they were plus its noisy rows as the LLM re-labelled them.
"""

from freeal_ray.stages.annotate import AnnotateRoundZero, GivenLabels
from freeal_ray.stages.expand import Expand
from freeal_ray.stages.finalize import Finalize
from freeal_ray.stages.ingest import Ingest
from freeal_ray.stages.refine import Refine
from freeal_ray.stages.score import Score
from freeal_ray.stages.select import Select
from freeal_ray.stages.synthesize import Synthesize
from freeal_ray.stages.train import Train

__all__ = ["Ingest", "Synthesize", "AnnotateRoundZero", "GivenLabels", "Train", "Score", "Select", "Refine", "Expand", "Finalize"]
