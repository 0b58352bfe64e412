"""The training plane: source training and fine-tuning with Ray Train.

losses (per task), optim (freezing, layer-wise LR, schedule, L2-SP), augment (on tensors),
loop (train_epoch / evaluate_epoch, no Ray), valmetrics (gathered validation metrics),
checkpoint (everything with state), worker (``train_func``), jobs (``run_training`` and
the ``source-train`` / ``finetune`` handlers).
"""
