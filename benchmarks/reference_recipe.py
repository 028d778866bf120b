"""The authors' recipe, reproduced for the throughput benchmark only (never for training).

What it keeps on purpose, because it costs time or memory (SPEC 2, defects 1, 3, 4):
one decode and three resizes per image in the loader (weak, strong and an unused raw view),
three forwards with autograd on in train mode (BatchNorm running statistics updated by
the strong and masked batches, a graph built for the masked pass), the CAM normalised
across the batch, losses in probability form, fp32.
"""
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import transforms

from ignore.data.images import open_rgb
from ignore.data.views import strong_view, weak_view

EPSILON = 1e-5


class ReferenceDataset(Dataset):
    """Opens and decodes each image once and makes three views of it, as the authors' loader does."""

    def __init__(self, split, image_root, image_size):
        self.images, self.image_root = split["image"], image_root
        self.labels = torch.tensor(split["labels"], dtype=torch.float32)
        self.observed = torch.tensor(split["observed"], dtype=torch.float32)
        self.weak, self.strong = weak_view(image_size), strong_view(image_size)
        self.raw = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.ToTensor()])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = open_rgb(self.image_root, self.images[index])
        weak, strong = self.weak(image), self.strong(image)
        raw = self.raw(image)  # returned, never used
        return {"weak": weak, "strong": strong, "raw": raw, "labels": self.labels[index],
                "observed": self.observed[index]}


class ReferenceStep:
    """One IGNORE iteration the authors' way; `__call__(model, optimizer, batch) -> loss`."""

    def __init__(self, num_classes, warm_up_done=True, cam_threshold=0.8, decay=0.999):
        self.gap_threshold = torch.zeros(())
        self.avg_threshold = torch.zeros(num_classes)
        self.warm_up_done, self.cam_threshold, self.decay = warm_up_done, cam_threshold, decay

    def __call__(self, model, optimizer, batch):
        model.train()
        weak, strong, observed = batch["weak"], batch["strong"], batch["observed"]
        weak_output, strong_output = model(weak), model(strong)
        weak_logits, strong_logits = weak_output["logits"], strong_output["logits"]
        positive_class = observed.argmax(dim=1)
        cam = weak_output["cam"][torch.arange(len(weak)), positive_class]
        # across the batch, minus the min and divided by the max of the raw maps (defect 1)
        cam = (cam - cam.min(dim=0).values) / (cam.max(dim=0).values + EPSILON)
        cam = F.interpolate(cam[:, None], size=weak.shape[-2:], mode="bilinear", align_corners=False)
        masked_logits = model(weak * (cam > self.cam_threshold))["logits"]  # autograd on, BN updated
        gap = (weak_logits - masked_logits).abs().detach()
        positive = observed == 1
        self.gap_threshold = self.decay * self.gap_threshold.to(gap.device) + (1 - self.decay) * gap[positive].mean()
        self.avg_threshold = (self.decay * self.avg_threshold.to(gap.device)
                              + (1 - self.decay) * weak_logits.detach().mean(dim=0))
        pseudo = (gap > self.gap_threshold) & (weak_logits.detach() > self.avg_threshold)
        reject = (pseudo.float() - positive.float()).clamp(0, 1) if self.warm_up_done else torch.zeros_like(gap)
        weak_probability, strong_probability = torch.sigmoid(weak_logits), torch.sigmoid(strong_logits)
        loss_spbc = -torch.log(weak_probability[positive] + EPSILON).mean()
        target = positive.float()
        entry_loss = -(target * torch.log(strong_probability + EPSILON)
                       + (1 - target) * torch.log(1 - strong_probability + EPSILON))
        keep = 1 - reject
        loss_ign = (entry_loss * keep).sum() / keep.sum()
        loss_reg = F.mse_loss(strong_logits, weak_logits)
        loss = 0.1 * loss_spbc + loss_ign + 0.5 * loss_reg
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach()
