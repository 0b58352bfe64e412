"""The training plane: one engine for source training, fine-tuning, pretraining and trials.

plan (the run plan, pure), batches and rankdata (what each rank trains and validates on),
engine (the one epoch driver and the checkpoint policy), session (Ray Train: checkpoints,
agreement between ranks, progress), control (the command's progress display and stop
requests), supervised (the classifier trainee), worker (``train_func``), launch (the one
launcher and the trial runner), loop (the step and the validation pass, no Ray), losses,
optim (freezing, layer-wise LR, schedule, L2-SP), augment (on tensors), valmetrics,
checkpoint (everything with state), resume (a run's checkpoint records and which one it resumes
from), jobs (the supervised stages' checks, card and handlers).
"""
