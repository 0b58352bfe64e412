"""The supervised stages: ``source-train`` and ``finetune``, and an experiment's trials (a fine-tune
with overrides), built on the one training engine (:mod:`medxfer.train`).

``stage`` hands the engine the stage's inputs and runs it (``run_training``), ``planning`` plans a
run or a trial, ``classifier_trainee`` is the trainee every worker builds (the classifier, one epoch,
one validation), ``valmetrics`` the validation metrics on the gathered split, ``classifier_card``
the bundle's card (with the positive class).
"""
