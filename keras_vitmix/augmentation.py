"""The training split's augmentation, as Keras preprocessing layers run inside tf.data
(`keras_vitmix.datasets.load(..., augment=)`)."""

from keras_vitmix import _internals


def augmenter(info, strength, seed):
    """Keras preprocessing layers, run inside tf.data on uint8-range float images."""
    import keras
    import tensorflow as tf

    height, width = info.image_shape[:2]
    pad = max(1, height // 8)
    crop = keras.layers.RandomCrop(height, width, seed=seed)
    flip = keras.layers.RandomFlip("horizontal", seed=seed) if info.flip_invariant else None
    rand_augment = keras.layers.RandAugment(value_range=(0, 255), seed=seed) if strength == "strong" else None
    if rand_augment is not None:
        # Under JAX its equalization would count histograms with a loop over 256 bins.
        _internals.use_bincount_histograms(rand_augment)

    def light(images, labels):
        images = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])  # zeros, as the standard CIFAR crop
        images = crop(images, training=True)
        if flip is not None:
            images = flip(images, training=True)
        if rand_augment is not None:
            images = rand_augment(images, training=True)
        return images, labels

    if strength != "strong":
        return light
    mixup = keras.layers.MixUp(seed=seed)
    cutmix = keras.layers.CutMix(seed=seed)
    num_classes = info.num_classes

    def strong(images, labels):
        images, labels = light(images, labels)
        data = {"images": images, "labels": tf.one_hot(labels, num_classes)}
        mixed = tf.cond(
            tf.random.uniform((), seed=seed) < 0.5,
            lambda: mixup(data, training=True),
            lambda: cutmix(data, training=True),
        )
        return mixed["images"], mixed["labels"]

    return strong

