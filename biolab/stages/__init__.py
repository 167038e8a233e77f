"""Every stage kind, one module each, registered once here.

generate (data) -> tokenize (corpus) -> pretrain (BIO, or mixed with ``train.qa_ratio``) ->
finetune + evaluate, or evaluate alone (mixed training) -> probe; memorization and capacity (bits
of knowledge, Part 3.3) of the pretrained model; a manipulation task set (tasks) -> task_finetune or
task_mixed -> task_eval. A kind's module holds its ``Kind`` record (outputs, build, config check)
and the reader that turns its finished folders into report rows; adding a kind is that module, its
line in ``KINDS`` and, when the report shows its numbers, its line in ``READERS`` (biolab.pipeline.plan
wires it into runs; biolab.report renders whatever the readers return).
"""

from biolab.stages.capacity import CAPACITY, CAPACITY_READER
from biolab.stages.data import CORPUS, DATA
from biolab.stages.memorization import MEMORIZATION, MEMORIZATION_READER
from biolab.stages.pretrain import PRETRAIN
from biolab.stages.probe import PROBE, PROBE_READER
from biolab.stages.qa import EVALUATE, FINETUNE, QA_READER
from biolab.stages.tasks import TASK_EVAL, TASK_FINETUNE, TASK_MIXED, TASK_READER, TASKS

KINDS = {k.name: k for k in (DATA, CORPUS, PRETRAIN, FINETUNE, EVALUATE, PROBE, MEMORIZATION, CAPACITY,
                             TASKS, TASK_FINETUNE, TASK_MIXED, TASK_EVAL)}  # fmt: skip
# in results.csv's order: a run's QA, probe and capacity rows; after every run, memorization and tasks
READERS = (QA_READER, PROBE_READER, CAPACITY_READER, MEMORIZATION_READER, TASK_READER)
