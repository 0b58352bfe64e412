"""The training engine: one for source training, fine-tuning, pretraining and trials; it names no stage.

A stage (:mod:`medxfer.supervised`, :mod:`medxfer.ssl`) plans its run with the rules of ``plan``
(the run plan, pure) and hands the launcher its trainee and inputs (``launch.StageInputs``).
batches and rankdata (what each rank trains and validates on), engine (the one epoch driver and
the checkpoint policy), session (Ray Train: checkpoints, agreement between ranks, progress),
control (the command's progress display and stop requests), worker (``train_func``, which builds
the trainee it is given), launch (the one launcher and the trial runner), runs (is this the same
run?), loop (the step and the validation outputs, no Ray), collectives (what ranks sum, gather and
broadcast), losses, optim (freezing, layer-wise LR, schedule, L2-SP), augment (on tensors),
checkpoint (everything with state), resume (a run's checkpoint records and which one it resumes
from), events and watchdog (the controller's state changes, and what explains a silent run).
"""
