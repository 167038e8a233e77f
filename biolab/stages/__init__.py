"""Every stage kind, one module each, registered once here.

generate (data) -> tokenize (corpus) -> pretrain (BIO, or mixed with ``train.qa_ratio``) ->
finetune + evaluate, or evaluate alone (mixed training) -> probe; memorization and capacity (bits
of knowledge, Part 3.3) of the pretrained model; a manipulation task set (tasks) -> task_finetune or
task_mixed -> task_eval. A kind's module holds its ``Kind`` record (outputs, build, config check)
and the reader of its finished folder; adding a kind is that module and its line in ``KINDS``
(biolab.pipeline.plan wires it into runs, biolab.report reads it).
"""

from biolab.stages.capacity import CAPACITY
from biolab.stages.data import CORPUS, DATA
from biolab.stages.memorization import MEMORIZATION
from biolab.stages.pretrain import PRETRAIN
from biolab.stages.probe import PROBE
from biolab.stages.qa import EVALUATE, FINETUNE
from biolab.stages.tasks import TASK_EVAL, TASK_FINETUNE, TASK_MIXED, TASKS

KINDS = {k.name: k for k in (DATA, CORPUS, PRETRAIN, FINETUNE, EVALUATE, PROBE, MEMORIZATION, CAPACITY,
                             TASKS, TASK_FINETUNE, TASK_MIXED, TASK_EVAL)}  # fmt: skip
