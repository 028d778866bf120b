"""The two training views of SPEC 2.1 and the evaluation view.

`normalisation` is {"mean": (3,), "std": (3,)}, the statistics the backbone's weights were
trained with (ImageNet's unless the weights say otherwise).
"""
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def eval_view(image_size, normalisation=IMAGENET):
    """Resize to a square, tensor, normalisation."""
    return transforms.Compose([
        transforms.Resize((image_size, image_size)),
        transforms.ToTensor(),
        transforms.Normalize(normalisation["mean"], normalisation["std"]),
    ])


def weak_view(image_size, normalisation=IMAGENET):
    """Resize, random horizontal flip, tensor, normalisation."""
    return transforms.Compose([
        transforms.Resize((image_size, image_size)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(normalisation["mean"], normalisation["std"]),
    ])


def strong_view(image_size, normalisation=IMAGENET):
    """RandAugment(num_ops=3, magnitude=5) on the raw image, then the weak pipeline (own flip)."""
    return transforms.Compose([transforms.RandAugment(num_ops=3, magnitude=5), weak_view(image_size, normalisation)])


def mean_and_std(images, normalisation):
    """The normalisation's mean and std as (3, 1, 1) tensors on the device and dtype of `images`."""
    return (images.new_tensor(normalisation[key])[:, None, None] for key in ("mean", "std"))


def pixel_to_normalised(images, normalisation, pixels):
    """The normalised value of a pixel colour (3,) in [0, 1], shaped to broadcast over `images`."""
    mean, std = mean_and_std(images, normalisation)
    return (images.new_tensor(pixels)[:, None, None] - mean) / std


def denormalise(images, normalisation=IMAGENET):
    """Normalised (B, 3, H, W) back to [0, 1] pixels, for pictures."""
    mean, std = mean_and_std(images, normalisation)
    return (images * std + mean).clamp(0, 1)
