"""PinRec training library (PyTorch + Lightning, no dagster).

Entry points:
    training.train.pretrain(events, out_dir, model_cfg, data_cfg, loss_cfg, optim_cfg, train_cfg, split)
    training.train.fine_tune(events, surface, base_dir, out_dir, data_cfg, loss_cfg, optim_cfg, train_cfg, n_hard)
    training.train.load_model(out_dir) -> training.model.PinRec
    PinRec.generate_queries(sequences, budget) -> {"queries", "outcomes", "offsets"}
    training.evaluate.evaluate_public_model / evaluate_popularity / evaluate_pinrec / retrieve
Modules are imported lazily by the caller (`from training.train import pretrain`).
"""
