"""Self-supervised source pretraining (``medxfer pretrain``).

``view_pairs`` makes the two random views on the workers, ``methods`` holds SimSiam, BYOL and
SimCLR around a medxfer backbone, ``trainee`` is what pretraining plugs into the training
engine (the SSL model, its epoch, the export of the backbone), and ``pretrain`` prepares the
pooled data, plans the run and builds the card: ``run_pretrain(cfg)`` writes an ordinary model
bundle holding the backbone only, which ``finetune`` takes as its source (``model.init``).
"""
