"""The two training views of SPEC 2.1 and the evaluation view."""
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_view(image_size):
    """Resize to a square, tensor, ImageNet normalisation."""
    return transforms.Compose([
        transforms.Resize((image_size, image_size)),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def weak_view(image_size):
    """Resize, random horizontal flip, tensor, ImageNet normalisation."""
    return transforms.Compose([
        transforms.Resize((image_size, image_size)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def strong_view(image_size):
    """RandAugment(num_ops=3, magnitude=5) on the raw image, then the weak pipeline (own flip)."""
    return transforms.Compose([transforms.RandAugment(num_ops=3, magnitude=5), weak_view(image_size)])


def denormalise(images):
    """Normalised (B, 3, H, W) back to [0, 1] pixels, for pictures."""
    mean = images.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = images.new_tensor(IMAGENET_STD)[:, None, None]
    return (images * std + mean).clamp(0, 1)
