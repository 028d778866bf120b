"""Optimiser with a faster CAM head (SPEC 2.9) and the learning-rate schedule."""
import torch

from ..errors import SPMLError
from .registry import OPTIMIZERS, SCHEDULERS

PARAM_GROUPS = ("trunk", "head")  # the optimiser's parameter groups, in order: the names their learning rates log under


def build_optimizer(model, optim_config, head_lr_multiplier, lr):
    if optim_config.optimizer not in OPTIMIZERS:
        raise SPMLError(f"optim.optimizer '{optim_config.optimizer}' is not one of {sorted(OPTIMIZERS)}")
    head = {id(parameter) for parameter in model.head_parameters()}
    groups = [  # in the order of PARAM_GROUPS
        {"params": [p for p in model.parameters() if id(p) not in head], "lr": lr},
        {"params": model.head_parameters(), "lr": lr * head_lr_multiplier},
    ]
    return getattr(torch.optim, OPTIMIZERS[optim_config.optimizer])(groups, lr=lr, weight_decay=optim_config.weight_decay)


def build_scheduler(optimizer, optim_config, total_steps):
    """Stepped once per optimiser step by the loop."""
    if optim_config.scheduler not in SCHEDULERS:
        raise SPMLError(f"optim.scheduler '{optim_config.scheduler}' is not one of {SCHEDULERS}")
    if optim_config.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total_steps, pct_start=0.2)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
