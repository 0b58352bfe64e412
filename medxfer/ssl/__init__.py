"""Self-supervised source pretraining (``medxfer pretrain``).

``augment`` makes the two random views on the workers, ``methods`` holds SimSiam, BYOL and
SimCLR around a medxfer backbone, ``trainee`` is what pretraining plugs into the training
engine (the SSL model, its epoch, the export of the backbone), and ``jobs`` prepares the
pooled data and the card: ``run_pretrain(cfg)`` writes an ordinary model bundle holding the
backbone only, which ``finetune`` takes as its source (``model.init``).
"""
