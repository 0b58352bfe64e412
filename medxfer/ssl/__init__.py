"""Self-supervised source pretraining (``medxfer pretrain``).

``augment`` makes the two random views on the workers, ``methods`` holds SimSiam, BYOL and
SimCLR around a medxfer backbone, ``worker`` is the Ray Train loop and its plain parts, and
``jobs`` is the driver: ``run_pretrain(cfg)`` writes an ordinary model bundle holding the
backbone only, which ``finetune`` takes as its source (``model.init``).
"""
