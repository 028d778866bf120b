"""The one place where model and backbone names are listed (names only: no torch import, so the
config checks `model.name` and `model.backbone` in a fraction of a second)."""

MODELS = ("cam", "q2l")  # build.py: the CAM classifier, Query2Label
# each trunk and the channels of its last feature map: small_cnn (ours, from scratch) and torchvision's
BACKBONES = {"small_cnn": 256, "resnet18": 512, "resnet34": 512, "resnet50": 2048, "mobilenet_v2": 1280}

CHOICES = {"model.name": MODELS, "model.backbone": tuple(BACKBONES)}
