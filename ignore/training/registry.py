"""The one place where the training run's named choices are listed (names only: no torch or
Accelerate import, so the config checks them in a fraction of a second)."""

OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW"}  # name: its torch.optim class
SCHEDULERS = ("none", "onecycle")  # optim.py
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")  # precision.py
# "none" or a tracker of Accelerate's LoggerType (a test keeps this list equal to Accelerate's)
TRACKERS = ("tensorboard", "none", "aim", "wandb", "trackio", "comet_ml", "mlflow", "clearml", "dvclive", "swanlab")

CHOICES = {
    "optim.optimizer": tuple(OPTIMIZERS),
    "optim.scheduler": SCHEDULERS,
    "train.mixed_precision": MIXED_PRECISION,
    "train.tracker": TRACKERS,
}
