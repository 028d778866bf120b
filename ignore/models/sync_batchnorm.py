"""BatchNorm statistics over the global batch of every process (`model.sync_batchnorm`).

With per-process BatchNorm, N processes of B images normalise with N different B-image
statistics, where one process of N*B images uses one: the weak pass, the masked pass and
the running statistics all differ. torch.nn.SyncBatchNorm fixes that on GPUs (as
torchvision's references do with --sync-bn) but refuses CPU tensors, so CPU processes over
gloo get `GlobalBatchNorm`: the same statistics from one differentiable all-reduce.
"""
import torch
import torch.distributed as dist
from torch import nn

GPU_KINDS = ("cuda", "xpu", "hpu")  # where torch's own SyncBatchNorm runs


class SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradient: every process's input gets
    the gradient of every process's use of the sum."""

    @staticmethod
    def forward(ctx, tensor):
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, gradient):
        total = gradient.clone()
        dist.all_reduce(total)
        return total


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A BatchNorm whose training-mode statistics cover every process's batch.

    Each process all-reduces its per-channel (sum, sum of squares, count), in float64 so
    that E[x^2] - E[x]^2 loses nothing to cancellation. The all-reduce is differentiable
    (its backward all-reduces the gradients), so every process's input receives the
    gradient of the global normalisation, as in one process. Evaluation mode, one process
    or no process group: plain BatchNorm. Same parameters and buffers as nn.BatchNorm2d,
    so checkpoints and exports do not change.
    """

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, input):
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        channels = input.shape[1]
        dims = [0] + list(range(2, input.dim()))
        local_count = input.numel() // channels
        values = input.float()  # bf16/fp16 under autocast: statistics and output in float32, as BatchNorm's
        statistics = torch.cat([values.sum(dims, dtype=torch.float64), values.square().sum(dims, dtype=torch.float64),
                                torch.full((1,), float(local_count), dtype=torch.float64, device=input.device)])
        statistics = SumOverProcesses.apply(statistics)
        count = statistics[-1]
        mean = statistics[:channels] / count
        variance = (statistics[channels:2 * channels] / count - mean.square()).clamp(min=0)
        if self.track_running_stats:
            self._update_running_statistics(mean.detach(), variance.detach() * count / (count - 1).clamp(min=1))
        shape = [1, channels] + [1] * (input.dim() - 2)
        scale = torch.rsqrt(variance + self.eps).float()
        shift = -mean.float() * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        return (values * scale.view(shape) + shift.view(shape)).to(input.dtype)

    @torch.no_grad()
    def _update_running_statistics(self, mean, unbiased_variance):
        self.num_batches_tracked.add_(1)
        # momentum None: the cumulative average, as nn.BatchNorm does (a tensor: no host sync)
        factor = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.double()
        self.running_mean.mul_(1 - factor).add_(factor * mean.to(self.running_mean.dtype))
        self.running_var.mul_(1 - factor).add_(factor * unbiased_variance.to(self.running_var.dtype))


def synchronise_batchnorm(model, device):
    """`model` with every BatchNorm computing global-batch statistics: torch's SyncBatchNorm
    on GPUs, GlobalBatchNorm elsewhere; weights and buffers carried over."""
    if device.type in GPU_KINDS:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _replace_batchnorm(model)


def _replace_batchnorm(module):
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        replacement = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                      module.track_running_stats)
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        tensors = list(module.parameters()) + list(module.buffers())
        return replacement.to(tensors[0].device) if tensors else replacement
    for name, child in module.named_children():
        module.add_module(name, _replace_batchnorm(child))
    return module
