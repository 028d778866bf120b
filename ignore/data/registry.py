"""The data settings' fixed values (names only, no torch import: the config checks them when parsed)."""

BAD_IMAGE_POLICIES = ("error", "skip")  # torch_dataset.py
DEMO_LAYOUTS = ("dense", "sparse")  # demo.py: the built-in datasets

CHOICES = {"data.bad_images": BAD_IMAGE_POLICIES, "data.demo": DEMO_LAYOUTS}
